"""The Airflow DAG files (a package only so that the layer check sees their imports)."""
