"""Delivery handlers (http, function, database) behind one small contract."""
