-- Two shared keys, each read and sent on by one event type and written without being read by
-- the other: a "Left" handler reads "left", sends on it, and marks "right"; a "Right" handler
-- the mirror. Two batches running at once, one of each type, each hold the lock the other's
-- commit needs: write skew, which no order serializes (superclient/README.md, "Serializable
-- state").
bus:register("test")

local other = { Left = "right", Right = "left" }

local function touch(event_type, key, correlation, data, meta)
  local seen = redis:get(string.lower(event_type))
  bus:send("Touched", "touched-" .. key, "any", nil, { seq = meta.seq, seen = seen })
  redis:set(other[event_type], key)
  redis:incr("count:" .. key)
end

bus:add_event_listener("Left", touch)
bus:add_event_listener("Right", touch)
