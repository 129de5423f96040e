package testutil

import (
	"testing"
	"time"
)

// Eventually calls f until it returns nil and fails the test when it has
// not after timeout, with f's last error. It polls quickly at first and
// then backs off to once a second, so that a condition met at once costs
// little and a slow one (a pod starting, a kubectl round trip) does not
// busy the machine.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := 50 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %v", what, timeout, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, time.Second)
	}
}
