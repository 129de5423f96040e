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
	"strconv"
	"strings"
	"sync"
	"time"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
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

// ClusterView is the part of GET /v1/cluster the operator uses.
type ClusterView struct {
	ClusterID   string `json:"clusterID"`
	Leader      string `json:"leader"`
	CommitIndex uint64 `json:"commitIndex"`
	Members     []struct {
		ID      string `json:"id"`
		Role    string `json:"role"`
		Healthy bool   `json:"healthy"`
		Status  *struct {
			AppliedIndex uint64 `json:"appliedIndex"`
		} `json:"status"`
	} `json:"members"`
}

// Observe probes pods 0..pods-1 (and any member beyond) and reads the
// configuration from a member that answers.
func (c *Client) Observe(ctx context.Context, pods int, lag uint64) (running []int, view *ClusterView, members []Member, leader int) {
	leader = -1
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
			running = append(running, i)
		}
	}
	for _, i := range running {
		var v ClusterView
		if err := c.get(ctx, i, "/v1/cluster", &v); err != nil || v.Leader == "" {
			continue
		}
		view = &v
		break
	}
	if view == nil {
		return running, nil, nil, -1
	}
	for _, m := range view.Members {
		ord, ok := c.ordinal(m.ID)
		if !ok {
			continue
		}
		caught := m.Status != nil && m.Status.AppliedIndex+lag >= view.CommitIndex
		members = append(members, Member{Ordinal: ord, Voter: m.Role == "voter", Healthy: m.Healthy, CaughtUp: caught})
		if m.ID == view.Leader {
			leader = ord
		}
	}
	return running, view, members, leader
}

func (c *Client) ordinal(podName string) (int, bool) {
	prefix := kvv1.StatefulSetName(c.kvs) + "-"
	if !strings.HasPrefix(podName, prefix) {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimPrefix(podName, prefix))
	return n, err == nil
}

// Execute makes one step through pod via (any running member; calls that
// need the leader are redirected there by the kvnode).
func (c *Client) Execute(ctx context.Context, s Step, via int) error {
	name := kvv1.PodName(c.kvs, s.Ordinal)
	switch s.Action {
	case kvv1.ActionBootstrap:
		err := c.post(ctx, s.Ordinal, "/v1/cluster/bootstrap", nil)
		var he *HTTPError
		if errors.As(err, &he) && he.Status == http.StatusConflict {
			return nil // already bootstrapped: the step was done before a crash
		}
		return err
	case kvv1.ActionAddNonVoter:
		return c.post(ctx, via, "/v1/cluster/members", map[string]string{
			"id": name, "address": c.PeerAddr(s.Ordinal), "api": c.URL(s.Ordinal),
		})
	case kvv1.ActionPromote:
		return c.post(ctx, via, "/v1/cluster/members/"+name+"/promote", nil)
	case kvv1.ActionDemote:
		return c.post(ctx, via, "/v1/cluster/members/"+name+"/demote", nil)
	case kvv1.ActionTransfer:
		return c.post(ctx, via, "/v1/cluster/leader", map[string]string{})
	case kvv1.ActionRemove:
		return c.do(ctx, via, http.MethodDelete, "/v1/cluster/members/"+name, nil, nil)
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
