"""The publishing core: what every way of publishing shares, with no web framework in it.

- `publishing.messages`: preparing a message (its `message_records` row and stream entry,
  partition, size check, encoding and encryption with the keyring passed in);
- `publishing.records`: the SQL of message records (insert with idempotency, duplicates'
  answers, offsets);
- `publishing.group`: store-and-append for a group of publishes (one statement and one commit
  for all their records, one Redis round trip for all their entries: `publishing.appends`),
  with the offsets on their way into the database kept by `publishing.offsets`;
- `publishing.jobs`: a request's publishes, their answers, and the errors failures become;
- `publishing.writer`: the group writer thread that collects the publishes of all request
  threads of a process into such groups.

The API's publish endpoints, delayed and scheduled publishing, the scheduler's cron runs and
the outbox sweep all call it; callers check access and quotas, and record metrics.
"""
