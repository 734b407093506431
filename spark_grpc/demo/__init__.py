"""Demo helpers: a fake LangFlow / Agents / Hive server for newcomers and tests.

``spark_grpc.demo.fake_sources`` serves all three source APIs on one port; see its
docstring for the echo rules, the well-known ids and the test controls.
"""
