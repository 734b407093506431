"""One module per proto service: validate, call the data layer, map rows to messages."""
