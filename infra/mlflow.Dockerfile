# The MLflow tracking server of docker-compose.yml: basic auth, PostgreSQL driver and S3 client.
# Same MLflow version as requirements.lock, so clients and server speak the same API.
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow[auth]==3.17.2" "psycopg2-binary>=2.9,<3" "boto3>=1.34,<2"
EXPOSE 5000
