"""Sample handler functions used by the README walk-through (allow them with
`MQ_FUNCTION_MODULES=examples`)."""
