-- The W3C trace context (`traceparent`) of the request that caused each
-- event, so the relay can put it on the stream entry and a consumer can
-- continue that trace. A column of its own, not a member of `data`: `data`
-- is the event as consumers read it, and the trace is how it travelled.
-- NULL when the service exports no traces, and for rows written before.
ALTER TABLE outbox ADD COLUMN traceparent text;
