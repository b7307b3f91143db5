-- Test service for the rebuild's pipelined commits: every replayed event reads back an
-- increment whose base the previous batch wrote, so a read that ran before that batch's
-- commit was in would give a rank twice.
bus:register("test", { appends = { "Counted" } })

bus:add_rebuild_handler("Counted", function(event_type, key, correlation, data, meta)
  redis:hset("rank", meta.seq, redis:incr("ranked"))
end)
