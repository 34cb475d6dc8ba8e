"""This repo's own Pulumi program (program.py) and its example stack files; the components and the settings
table it uses are installed with the package, in xcom_backend.pulumi."""
