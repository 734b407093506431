"""``python -m spark_grpc`` runs the spark-grpc command line."""

from spark_grpc.cli import app

app()
