"""People's rights over the hub's data and the hub's transparency (docs/rights.md).

A pure core: ``requests`` (the signed request format), ``store`` (owner-only
storage and register), ``process`` (verify, refuse, apply), ``access`` (the
answer to an access request), ``deadlines`` (the GDPR month), ``directory``
(the public directory of projects), ``opt_out`` (the opt-out registry as the
warehouse sees it). The Dagster shell: ``assets``, ``opt_out_purge`` (the
purge and retention jobs) and ``sensors`` (the opt-out purge sensor).
"""
