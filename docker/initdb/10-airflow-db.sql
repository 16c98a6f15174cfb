-- Airflow keeps its metadata in its own database beside the product's.
CREATE DATABASE airflow OWNER personalize;
