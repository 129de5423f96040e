package membership

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

// QuorumLoss says whether the store has lost its quorum for good, and if
// so which pod a person should recover it from; "" when it has not.
//
// Only certain loss counts: a voter whose pod runs and reports a new
// volume (not admitted) has lost what it held. A voter that does not
// answer may come back with its data (a node rebooting, a pod being
// rescheduled), so it counts as possibly alive, and the store waits as
// Raft does. The quorum is lost for good when the voters that may still
// hold their data are fewer than a majority of the configuration a member
// last reported (no leader can report one). Nothing is done about it
// here: recovering gives up the writes only the lost members held, which
// is a person's decision (docs/quorum-loss.md).
//
// It returns the message and the survivor's ordinal (-1 when none answers).
func QuorumLoss(o Observation, name func(ordinal int) string) (string, int) {
	if o.FromLeader || o.View == nil || o.View.Leader != "" {
		return "", -1
	}
	reports := map[string]Report{}
	for _, r := range o.Reports {
		reports[name(r.Ordinal)] = r
	}
	var voters, lost []string
	var best *Report
	for _, m := range o.View.Members {
		if m.Role != clusterapi.RoleVoter {
			continue
		}
		voters = append(voters, m.ID)
		r, ok := reports[m.ID]
		switch {
		case ok && r.NewVolume:
			lost = append(lost, m.ID)
		case ok && r.HasState:
			if best == nil || r.LastIndex > best.LastIndex || (r.LastIndex == best.LastIndex && r.Term > best.Term) {
				best = &r
			}
		}
	}
	majority := len(voters)/2 + 1
	if len(voters) == 0 || len(voters)-len(lost) >= majority {
		return "", -1
	}
	sort.Strings(lost)
	msg := fmt.Sprintf("quorum lost: %d of %d voters lost their volumes (%s), and a majority is %d", len(lost), len(voters), strings.Join(lost, ", "), majority)
	if best == nil {
		return msg + "; no surviving member answers", -1
	}
	return msg + fmt.Sprintf("; the most up-to-date survivor is %s (last index %s, term %d): annotate the store with %s=%s to rebuild it from that member (docs/quorum-loss.md)",
		name(best.Ordinal), strconv.FormatUint(best.LastIndex, 10), best.Term, "kv.kvstore.dev/recover-from", name(best.Ordinal)), best.Ordinal
}
