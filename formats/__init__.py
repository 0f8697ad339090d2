"""Message formats: how payloads are encoded, compressed, encrypted and checked against schemas.

- `formats.codec`: a topic's stored form of a message (format, compression, encryption);
- `formats.compression`: gzip and zstd;
- `formats.encryption`: per-tenant AES-256-GCM keys derived from the master key;
- `formats.json_schema`, `formats.avro`, `formats.protobuf`: one module per schema format
  (valid definitions, payload checks, reader/writer compatibility);
- `formats.schema_registry`: the registry's rules over all three formats.

Above the core (`mq`) only: no web framework, storage or broker in here.
"""
