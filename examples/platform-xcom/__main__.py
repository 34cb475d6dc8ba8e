"""A platform team's own Pulumi program that gives two Airflow deployments (sales, ml) an object-storage XCom
backend each, isolated from the other, with the XComStorage component of airflow-xcom-objectstorage.

    pip install 'airflow-xcom-objectstorage[provision-aws]'   # from the wheel: see docs/component.md
    pulumi stack init prod && pulumi config set aws:region eu-central-1 && pulumi up
    pulumi stack output --json --show-secrets | xcom-backend export --deployment sales --output sales.env
"""

import pulumi

from xcom_backend.pulumi import XComStorage

config = pulumi.Config()

xcom = XComStorage(
    "xcom",
    cloud="aws",
    deployments=config.get_object("deployments") or ["sales", "ml"],
    compression="gzip",
    expiry_days=14,
    tags={"team": "platform", "cost-center": "1234"},
    credential_generation=config.get_int("credentialGeneration") or 1,
    keep_previous_credential=config.get_bool("keepPreviousCredential") or False,
)

# The same outputs as this repo's own stack, so `xcom-backend export --deployment NAME` reads them.
for name, value in xcom.outputs.items():
    pulumi.export(name, value)
