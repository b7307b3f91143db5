-- Two shared tallies that every handler reads, writes and then sends on: a "Left" event takes
-- the lock on tally Left, a "Right" one on tally Right. Two batches that meet them in opposite
-- orders each hold the lock the other needs next (superclient/src/consume/apply.rs).
bus:register("test")

local function touch(event_type, key, correlation, data, meta)
  redis:hincr("tally", event_type, 1)
  redis:incr("count:" .. key)
  bus:send("Touched", "touched-" .. key, "any", nil, { seq = meta.seq })
end

bus:add_event_listener("Left", touch)
bus:add_event_listener("Right", touch)
