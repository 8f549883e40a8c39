"""The Spark side: the Structured Streaming query and the ETL that runs on executors."""
