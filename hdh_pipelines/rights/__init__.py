"""People's rights over the hub's data and the hub's transparency (docs/rights.md).

A pure core: ``requests`` (the signed request format), ``store`` (owner-only
storage and register), ``process`` (verify, refuse, apply), ``access`` (the
answer to an access request), ``deadlines`` (the GDPR month), ``directory``
(the public directory of projects). ``assets`` is the Dagster shell.
"""
