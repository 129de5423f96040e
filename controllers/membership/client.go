package membership

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

// Client calls the kvnodes' membership API with the operator's admin
// certificate.
type Client struct {
	kvs  *kvv1.KeyValueStore
	http *http.Client
	// URL and PeerAddr return pod i's API URL and Raft address; tests
	// point them elsewhere.
	URL      func(i int) string
	PeerAddr func(i int) string
}

// NewClient returns a client that trusts caPEM and presents the admin pair.
func NewClient(kvs *kvv1.KeyValueStore, caPEM, certPEM, keyPEM []byte) (*Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("membership: no CA certificate")
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("membership: admin certificate: %w", err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}
	return &Client{kvs: kvs, http: &http.Client{Transport: tr, Timeout: 5 * time.Second}, URL: func(i int) string { return kvv1.PodAPIURL(kvs, i) }, PeerAddr: func(i int) string { return kvv1.PodPeerAddress(kvs, i) }}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Observation is what Observe saw.
type Observation struct {
	// Running are the ordinals of the pods whose kvnode answers.
	Running []int
	// Reports are what each running pod that answered GET /v1/cluster
	// says about itself (its cluster ID and whether it has state), by
	// ordinal, and the same for a leader beyond the pods probed.
	Reports []Report
	// View is GET /v1/cluster from the leader when it answered, else from
	// the first running member that did (for status only); nil when none
	// did.
	View *clusterapi.Cluster
	// FromLeader: View was answered by the leader itself.
	FromLeader bool
	// Members are the members of View that are pods of the store, and
	// Leader is the leader's ordinal; both only when FromLeader (nil and
	// -1 otherwise), because another member's configuration may lag.
	Members []Member
	Leader  int
}

// Observe probes pods 0..pods-1 (and any member beyond), asks every pod
// that runs for its view, and reads the configuration from the leader:
// from a running member that says it leads, or from the leader another
// member names.
func (c *Client) Observe(ctx context.Context, pods int, lag uint64) Observation {
	o := Observation{Leader: -1}
	alive := make([]bool, pods)
	var wg sync.WaitGroup
	for i := 0; i < pods; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			alive[i] = c.get(ctx, i, "/livez", nil) == nil
		}(i)
	}
	wg.Wait()
	for i, ok := range alive {
		if ok {
			o.Running = append(o.Running, i)
		}
	}
	// Every running pod is asked, not only until the leader is found: the
	// bootstrap guard and the cluster ID check need each pod's own word.
	views := make([]*clusterapi.Cluster, pods)
	for _, i := range o.Running {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var v clusterapi.Cluster
			if c.get(ctx, i, clusterapi.PathCluster, &v) == nil {
				views[i] = &v
			}
		}(i)
	}
	wg.Wait()
	report := func(i int, v *clusterapi.Cluster) {
		o.Reports = append(o.Reports, Report{
			Ordinal: i, ClusterID: v.ClusterID, HasState: v.HasState,
			NewVolume: v.Incarnation != "" && !v.Admitted, LastIndex: v.LastIndex, Term: v.Term,
		})
	}
	// Only the leader's own answer counts, and only when a quorum confirmed
	// its leadership and its configuration is committed (Authoritative).
	leads := func(i int, v *clusterapi.Cluster) bool {
		return v.Leader != "" && v.Leader == kvv1.PodName(c.kvs, i) && v.Authoritative()
	}
	for _, i := range o.Running {
		if v := views[i]; v != nil {
			report(i, v)
		}
	}
	for _, i := range o.Running {
		v := views[i]
		if v == nil {
			continue
		}
		// Without the leader's, the view kept for status (and for
		// QuorumLoss) is that of a member that holds its data, with the
		// latest configuration: one on a new volume knows none.
		if o.View == nil || better(v, o.View) {
			o.View = v
		}
		if leads(i, v) {
			o.View, o.FromLeader = v, true
			break
		}
		// Follow the leader this member names when it is not among the
		// pods probed: its own answer is the one that counts.
		if l, ok := kvv1.PodOrdinal(c.kvs, v.Leader); ok && l >= pods {
			var lv clusterapi.Cluster
			if c.get(ctx, l, clusterapi.PathCluster, &lv) == nil && leads(l, &lv) {
				report(l, &lv)
				o.View, o.FromLeader = &lv, true
				break
			}
		}
	}
	if !o.FromLeader {
		return o
	}
	for _, m := range o.View.Members {
		ord, ok := kvv1.PodOrdinal(c.kvs, m.ID)
		if !ok {
			continue
		}
		caught := m.Status != nil && m.Status.AppliedIndex+lag >= o.View.CommitIndex
		voter := m.Role == clusterapi.RoleVoter
		// A kvnode from before incarnations reports none: it is not lost.
		lost := voter && m.Status != nil && m.Status.Incarnation != "" && !m.Status.Admitted
		o.Members = append(o.Members, Member{
			Ordinal: ord, Voter: voter, Healthy: m.Healthy && !lost, CaughtUp: caught,
			Lost: lost, Misaddressed: m.Address != c.PeerAddr(ord),
		})
		if m.ID == o.View.Leader {
			o.Leader = ord
		}
	}
	return o
}

// better reports whether view a says more about the configuration than b.
func better(a, b *clusterapi.Cluster) bool {
	holds := func(v *clusterapi.Cluster) bool { return v.HasState && (v.Incarnation == "" || v.Admitted) }
	if holds(a) != holds(b) {
		return holds(a)
	}
	return a.ConfigurationIndex > b.ConfigurationIndex
}

// Execute makes one step through pod via (any running member; calls that
// need the leader are redirected there by the kvnode).
func (c *Client) Execute(ctx context.Context, s Step, via int) error {
	name := kvv1.PodName(c.kvs, s.Ordinal)
	switch s.Action {
	case kvv1.ActionBootstrap:
		err := c.post(ctx, s.Ordinal, clusterapi.PathBootstrap, nil)
		var he *HTTPError
		if errors.As(err, &he) && he.Status == http.StatusConflict {
			return nil // already bootstrapped: the step was done before a crash
		}
		return err
	case kvv1.ActionAddNonVoter, kvv1.ActionUpdateAddress:
		// Adding a member that exists updates its address and keeps its role.
		return c.post(ctx, via, clusterapi.PathMembers, clusterapi.AddMemberRequest{
			ID: name, Address: c.PeerAddr(s.Ordinal), API: c.URL(s.Ordinal),
		})
	case kvv1.ActionPromote, kvv1.ActionAdmit:
		// Promoting a voter admits its volume when it is new.
		return c.post(ctx, via, clusterapi.MemberPath(clusterapi.PathPromote, name), nil)
	case kvv1.ActionDemote:
		return c.post(ctx, via, clusterapi.MemberPath(clusterapi.PathDemote, name), nil)
	case kvv1.ActionTransfer:
		err := c.post(ctx, via, clusterapi.PathLeader, clusterapi.TransferRequest{})
		var he *HTTPError
		if errors.As(err, &he) && he.Status == http.StatusAccepted {
			// clusterapi.TransferUnknown: not done, but it may still happen;
			// the next reconcile observes who leads.
			return fmt.Errorf("leadership transfer outcome unknown, it may still take effect: %w", err)
		}
		return err
	case kvv1.ActionRecover:
		// One token per annotation value and store: the kvnode recovers
		// once per token, and refuses the same token again.
		token := string(c.kvs.UID) + "/" + c.kvs.Annotations[kvv1.AnnotationRecoverFrom]
		err := c.post(ctx, s.Ordinal, clusterapi.PathRecover, clusterapi.RecoverRequest{Token: token})
		var he *HTTPError
		if errors.As(err, &he) && he.Status == http.StatusAccepted {
			return nil
		}
		return err
	case kvv1.ActionRemove:
		return c.do(ctx, via, http.MethodDelete, clusterapi.MemberPath(clusterapi.PathMember, name), nil, nil)
	}
	return fmt.Errorf("membership: unknown action %q", s.Action)
}

// HTTPError is a non-200 answer.
type HTTPError struct {
	Status  int
	Message string
}

func (e *HTTPError) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Message) }

func (c *Client) get(ctx context.Context, i int, path string, out any) error {
	return c.do(ctx, i, http.MethodGet, path, nil, out)
}

func (c *Client) post(ctx context.Context, i int, path string, body any) error {
	return c.do(ctx, i, http.MethodPost, path, body, nil)
}

func (c *Client) do(ctx context.Context, i int, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL(i)+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return &HTTPError{Status: resp.StatusCode, Message: strings.TrimSpace(string(b))}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}
