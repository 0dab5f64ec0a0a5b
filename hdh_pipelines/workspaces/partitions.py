"""The workspaces' partitions: one per (approved project, month of the hub's calendar)."""

from collections import defaultdict

import dagster as dg

from hdh_pipelines.core.partitions import MONTHS

# Kept in step with projects/ by project_registry_sensor.
PROJECTS = dg.DynamicPartitionsDefinition(name="projects")
WORKSPACE_PARTITIONS = dg.MultiPartitionsDefinition({"project": PROJECTS, "month": MONTHS})


def months_by_project(partition_keys: list[str]) -> dict[str, list[str]]:
    """'YYYY-MM' months requested for each project, from the run's (project, month) partition keys."""
    requested: dict[str, list[str]] = defaultdict(list)
    for key in partition_keys:
        dimensions = WORKSPACE_PARTITIONS.get_partition_key_from_str(key).keys_by_dimension
        requested[dimensions["project"]].append(dimensions["month"][:7])
    return {project: sorted(months) for project, months in requested.items()}
