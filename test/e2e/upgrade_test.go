//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// An upgrade (spec.image changed) under continuous writes: the operator
// restarts the members one at a time, the leader last; every request that
// fails is a 503 with Retry-After, every acknowledged write is there
// afterwards, and the store never reports Degraded.
func TestUpgradeUnderWrites(t *testing.T) {
	ns := freshNamespace(t, "e2e-upgrade")
	defer dump(t, ns)
	apply(t, ns, `apiVersion: kv.kvstore.dev/v1alpha1
kind: KeyValueStore
metadata:
  name: upg
spec:
  replicas: 3
  image: kvstore.dev/kvnode:dev
  clients: [{name: e2e}]
`)
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "kvs/upg", "--timeout=180s")
	c := client(t, ns, "upg")
	base := "https://upg." + ns + ".svc:8080/v1/key/"

	var mu sync.Mutex
	acked := map[string]string{}
	outcomes := map[string]int{}
	var bad []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k, v := fmt.Sprintf("w%d-%06d", w, i), fmt.Sprintf("v%d", i)
				req, _ := http.NewRequest("PUT", base+k, strings.NewReader(v))
				resp, err := c.Do(req)
				mu.Lock()
				switch {
				case err != nil:
					outcomes["error"]++
					bad = append(bad, fmt.Sprintf("PUT %s: %v", k, err))
				case resp.StatusCode == 201:
					outcomes["201"]++
					acked[k] = v
				case resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "":
					outcomes["503 with Retry-After"]++
				default:
					outcomes[fmt.Sprintf("%d", resp.StatusCode)]++
					bad = append(bad, fmt.Sprintf("PUT %s: %d (Retry-After %q)", k, resp.StatusCode, resp.Header.Get("Retry-After")))
				}
				mu.Unlock()
				if resp != nil {
					resp.Body.Close()
					if resp.StatusCode == 503 {
						time.Sleep(100 * time.Millisecond)
					}
				}
			}
		}(w)
	}
	time.Sleep(2 * time.Second)
	start := time.Now()
	kubectl(t, "patch", "-n", ns, "kvs/upg", "--type=merge", "-p", `{"spec":{"image":"kvstore.dev/kvnode:dev-next"}}`)
	phases := map[string]bool{}
	var degraded []string
	testutil.Eventually(t, 6*time.Minute, "every member on the new image", func() error {
		phase := jsonpath(t, ns, "kvs/upg", "{.status.phase}")
		phases[phase] = true
		// Status, reason and message in one read: the condition may be
		// gone by a second one.
		if d := jsonpath(t, ns, "kvs/upg", `{range .status.conditions[?(@.type=="Degraded")]}{.status} {.reason}: {.message}{end}`); strings.HasPrefix(d, "True ") {
			degraded = append(degraded, strings.TrimPrefix(d, "True "))
		}
		images := kubectl(t, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance=upg", "-o", "jsonpath={range .items[*]}{.spec.containers[0].image} {end}")
		if strings.Count(images, "kvnode:dev-next") != 3 || phase != "Running" || jsonpath(t, ns, "kvs/upg", "{.status.upgrade}") != "" {
			return fmt.Errorf("phase %s, images %s", phase, images)
		}
		return nil
	})
	took := time.Since(start)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	var keys []string
	for k := range outcomes {
		keys = append(keys, fmt.Sprintf("%s: %d", k, outcomes[k]))
	}
	sort.Strings(keys)
	t.Logf("upgrade took %v; request outcomes: %s; phases seen: %v", took.Round(time.Second), strings.Join(keys, ", "), phases)
	if !phases["Upgrading"] {
		t.Error("phase Upgrading was never shown")
	}
	if len(degraded) > 0 {
		t.Errorf("Degraded during the upgrade: %v", degraded)
	}
	if len(bad) > 0 {
		t.Errorf("%d requests failed otherwise than 503 with Retry-After, e.g. %v", len(bad), bad[:min(5, len(bad))])
	}
	events := kubectl(t, "get", "events", "-n", ns, "--sort-by=.lastTimestamp", "-o", "jsonpath={range .items[*]}{.reason} {.note}{.message}{\"\\n\"}{end}")
	t.Logf("rollout events:\n%s", grepLines(events, "RestartMember", "LeadershipTransferred", "Upgraded"))

	lost := 0
	for k, v := range acked {
		code, body, err := do(c, "GET", base+k, "")
		if err != nil || code != 200 || body != v {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged write %s=%s: GET = %d %q %v", k, v, code, body, err)
			}
		}
	}
	t.Logf("acknowledged writes: %d, lost: %d", len(acked), lost)
}

func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.HasPrefix(l, w+" ") {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
