"""hdh-pipelines: the data platform of a national health data hub."""
