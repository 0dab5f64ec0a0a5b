"""Development and demo tools, kept out of the runtime package ``hdh_pipelines``.

``sftp_server`` and ``postgres_server`` start private servers on loopback (tests,
demo, benchmarks, ``scripts/instance.sh``); ``linkage_testdata`` builds linkage
populations with planted errors; ``demo`` is ``hdh-demo`` and the daemon-less
tick runner.
"""
