"""Object-storage XCom backend for Airflow: the env contract, the backend class and the export CLI."""
