"""spark-grpc: workflow orchestration for LangFlow, Automagik Agents and Automagik Hive,
with a gRPC API. The processes are in ``spark_grpc.cli``; the wiring in ``spark_grpc.server``.
"""

__version__ = "0.1.0"
