import sys

from xcom_backend.cli import main

sys.exit(main())
