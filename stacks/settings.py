"""The settings table's owner is xcom_backend.pulumi.settings (installed with the package, so the XComStorage
component validates with the same code); this name is that very module, for the program and older imports."""

import sys

from xcom_backend.pulumi import settings

sys.modules[__name__] = settings
