//go:build race

package gateway

// raceEnabled: the race detector enlarges goroutine stacks.
const raceEnabled = true
