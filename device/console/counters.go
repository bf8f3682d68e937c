package console

import (
	"encoding/json"
	"errors"
	"strconv"
)

// maxCounters bounds what a decoded counters object may hold.
const maxCounters = 4096

// UnmarshalJSON decodes an object of numbers, flattening nested objects
// into "name{key}" entries; other value types are skipped.
func (c *Counters) UnmarshalJSON(b []byte) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return err
	}
	out := make(Counters, len(top))
	var walk func(prefix string, raw json.RawMessage, depth int) error
	walk = func(name string, raw json.RawMessage, depth int) error {
		if len(out) >= maxCounters {
			return errors.New("too many counters")
		}
		var num json.Number
		if err := json.Unmarshal(raw, &num); err == nil {
			v, err := strconv.ParseFloat(num.String(), 64)
			if err == nil {
				out[name] = v
			}
			return nil
		}
		var obj map[string]json.RawMessage
		if depth < 2 && json.Unmarshal(raw, &obj) == nil {
			for k, v := range obj {
				if err := walk(name+"{"+k+"}", v, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for k, v := range top {
		if err := walk(k, v, 0); err != nil {
			return err
		}
	}
	*c = out
	return nil
}
