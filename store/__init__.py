"""The only package that knows ClickHouse: schema, client, batching writer, queries."""
