package cluster_test

import (
	"fmt"
	"math/rand"
	"strconv"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/pglog/pgtest"
	"github.com/kvstore-operator/kvstore-operator/test/harness"
)

// TestLinearizablePostgres is TestLinearizableUnderFaults for the
// Postgres mode: three stateless kvnodes on one PostgreSQL log, with
// kvnodes killed and paused and PostgreSQL stopped as a crash would stop it
// and started again, mid-run. The history must be linearizable, and every
// acknowledged write there at the end.
func TestLinearizablePostgres(t *testing.T) {
	duration := linDuration(t)
	for _, seed := range linSeeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { linearizablePostgres(t, seed, duration) })
	}
}

func linearizablePostgres(t *testing.T, seed int64, duration time.Duration) {
	t.Logf("seed %d (KV_LIN_SEED reproduces the fault schedule), duration %v (KV_LIN_DURATION)", seed, duration)
	pg := pgtest.Start(t)
	db := pg.NewDatabase(t)
	c, err := harness.New(harness.Options{Binary: kvnodeBin, Dir: t.TempDir(), ExtraArgs: []string{"--request-timeout", "3s"},
		Postgres: []string{
			"TLOG_DB_HOST=" + pg.Socket(), "TLOG_DB_PORT=" + strconv.Itoa(pg.Port), "TLOG_DB_DATABASE=" + db,
			"TLOG_DB_USERNAME=" + pgtest.User, "TLOG_DB_PASSWORD=" + pgtest.Password, "TLOG_DB_SSLMODE=disable",
			// A short log: nodes that were down load the state table.
			"KV_POSTGRES_RETAIN=50",
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpLogs(t.Output())
			t.Logf("postgres log:\n%s", pg.Log())
		}
		c.Close()
	})
	if err := c.StartN(ctxFor(t, time.Minute), 3); err != nil {
		t.Fatal(err)
	}
	checkLinearizable(t, c, seed, true, func() map[string]int {
		rng := rand.New(rand.NewSource(seed))
		counts := map[string]int{}
		deadline := time.Now().Add(duration)
		for time.Now().Before(deadline) {
			time.Sleep(time.Duration(500+rng.Intn(1500)) * time.Millisecond)
			m := c.Member(rng.Intn(3))
			switch rng.Intn(4) {
			case 0:
				counts["kill and restart a kvnode"]++
				m.Kill()
				time.Sleep(time.Duration(rng.Intn(1000)) * time.Millisecond)
				if err := m.Start(); err != nil {
					t.Error(err)
				}
			case 1:
				counts["pause a kvnode"]++
				m.Pause()
				time.Sleep(time.Duration(200+rng.Intn(2000)) * time.Millisecond)
				m.Resume()
			case 2:
				counts["crash and restart postgres"]++
				pg.Stop(t)
				time.Sleep(time.Duration(rng.Intn(2000)) * time.Millisecond)
				pg.Start(t)
			case 3:
				counts["crash postgres, then kill a kvnode while it is down"]++
				pg.Stop(t)
				m.Kill()
				time.Sleep(time.Duration(rng.Intn(1000)) * time.Millisecond)
				pg.Start(t)
				if err := m.Start(); err != nil {
					t.Error(err)
				}
			}
		}
		return counts
	})
}
