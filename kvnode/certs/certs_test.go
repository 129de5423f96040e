package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func writePair(t *testing.T, dir, name string, ca *CA, leaf Leaf) {
	t.Helper()
	c, k, err := ca.Issue(leaf, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, name+".crt"), c)
	writeFile(t, filepath.Join(dir, name+".key"), k)
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func reloader(t *testing.T, dir, name string) *Reloader {
	t.Helper()
	r, err := NewReloader(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"), filepath.Join(dir, "ca.crt"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// handshake runs a TLS handshake over a pipe and returns the client's and
// the server's errors.
func handshake(client, server *tls.Config) (error, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err, err
	}
	defer ln.Close()
	errs := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errs <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		errs <- tls.Server(c, server).Handshake()
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(conn, client)
	cerr := tc.Handshake()
	if cerr == nil {
		// In TLS 1.3 the server judges the client's certificate after the
		// client is done: read once to learn the verdict.
		_ = tc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, _ = tc.Read(make([]byte, 1))
	}
	return cerr, <-errs
}

func TestMutualTLSRequiresAPeerCertificateFromTheCA(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	ca, _ := NewCA("cluster", time.Hour, time.Now())
	rogue, _ := NewCA("rogue", time.Hour, time.Now())
	writeFile(t, filepath.Join(dir, "ca.crt"), ca.CertPEM)
	writeFile(t, filepath.Join(other, "ca.crt"), ca.CertPEM) // trusts the cluster CA...
	peer := Leaf{CommonName: "kv-0", Server: true, Client: true, Lifetime: time.Hour}
	writePair(t, dir, "a", ca, peer)
	writePair(t, dir, "b", ca, peer)
	writePair(t, other, "x", rogue, peer) // ...but its own certificate is not from it

	a, b, x := reloader(t, dir, "a"), reloader(t, dir, "b"), reloader(t, other, "x")
	ca1, _ := a.MutualConfig("", nil)
	cb, _ := b.MutualConfig("", nil)
	cx, _ := x.MutualConfig("", nil)
	if cerr, serr := handshake(cb, ca1); cerr != nil || serr != nil {
		t.Fatalf("two members: client %v, server %v", cerr, serr)
	}
	if _, serr := handshake(cx, ca1); serr == nil {
		t.Fatal("a peer with a certificate from another CA was accepted")
	}
	noCert := &tls.Config{InsecureSkipVerify: true}
	if _, serr := handshake(noCert, ca1); serr == nil {
		t.Fatal("a peer without a certificate was accepted")
	}
}

func TestReloaderKeepsTheOldCertificateOnABadUpdate(t *testing.T) {
	dir := t.TempDir()
	ca, _ := NewCA("cluster", time.Hour, time.Now())
	writeFile(t, filepath.Join(dir, "ca.crt"), ca.CertPEM)
	writePair(t, dir, "s", ca, Leaf{CommonName: "s", Server: true, Lifetime: time.Hour})
	r := reloader(t, dir, "s")
	before := r.Certificate().Leaf.SerialNumber
	writeFile(t, filepath.Join(dir, "s.crt"), []byte("half-written"))
	if changed, err := r.reload(); err == nil || changed {
		t.Fatalf("reload of a broken file: changed=%v err=%v", changed, err)
	}
	if r.Certificate().Leaf.SerialNumber.Cmp(before) != 0 {
		t.Fatal("a broken update replaced the certificate")
	}
	writePair(t, dir, "s", ca, Leaf{CommonName: "s", Server: true, Lifetime: 2 * time.Hour})
	if changed, err := r.reload(); err != nil || !changed {
		t.Fatalf("reload of a good file: changed=%v err=%v", changed, err)
	}
	if r.NotAfter().Before(time.Now().Add(90 * time.Minute)) {
		t.Fatal("NotAfter does not follow the new certificate")
	}
}

// When the peer CA is not the API's, a member's peer certificate must still
// pass the API's handshake (the internal calls require it there), and the
// member's API client must present it.
func TestAPIServerAcceptsPeerCertificatesFromThePeerCA(t *testing.T) {
	apiDir, peerDir, rogueDir := t.TempDir(), t.TempDir(), t.TempDir()
	apiCA, _ := NewCA("api", time.Hour, time.Now())
	peerCA, _ := NewCA("peers", time.Hour, time.Now())
	rogue, _ := NewCA("rogue", time.Hour, time.Now())
	writeFile(t, filepath.Join(apiDir, "ca.crt"), apiCA.CertPEM)
	writeFile(t, filepath.Join(peerDir, "ca.crt"), peerCA.CertPEM)
	writeFile(t, filepath.Join(rogueDir, "ca.crt"), peerCA.CertPEM)
	writePair(t, apiDir, "srv", apiCA, Leaf{CommonName: "kv", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Lifetime: time.Hour})
	peer := Leaf{CommonName: "kv-0", Server: true, Client: true, Lifetime: time.Hour}
	writePair(t, peerDir, "a", peerCA, peer)
	writePair(t, peerDir, "b", peerCA, peer)
	writePair(t, rogueDir, "x", rogue, peer)
	api, a, b, x := reloader(t, apiDir, "srv"), reloader(t, peerDir, "a"), reloader(t, peerDir, "b"), reloader(t, rogueDir, "x")

	server := api.ServerConfig(a)
	client := api.ClientConfig(b)
	if client.GetClientCertificate == nil {
		t.Fatal("the member's API client presents no certificate")
	}
	if cerr, serr := handshake(client, server); cerr != nil || serr != nil {
		t.Fatalf("a member calling with its peer certificate: client %v, server %v", cerr, serr)
	}
	if cerr, serr := handshake(api.ClientConfig(nil), server); cerr != nil || serr != nil {
		t.Fatalf("a client without a certificate: client %v, server %v", cerr, serr)
	}
	if _, serr := handshake(api.ClientConfig(x), server); serr == nil {
		t.Fatal("a certificate from neither CA passed the handshake")
	}
}

// The Raft port asks of a caller what the internal API asks: before, any
// certificate of the cluster CA (the admin's client certificate too) could
// send Raft messages.
func TestMutualTLSAsksAcceptOfThePeer(t *testing.T) {
	dir := t.TempDir()
	ca, _ := NewCA("cluster", time.Hour, time.Now())
	writeFile(t, filepath.Join(dir, "ca.crt"), ca.CertPEM)
	writePair(t, dir, "a", ca, Leaf{CommonName: "kv-0", Server: true, Client: true, Lifetime: time.Hour})
	writePair(t, dir, "b", ca, Leaf{CommonName: "kv-1", Server: true, Client: true, Lifetime: time.Hour})
	writePair(t, dir, "adm", ca, Leaf{CommonName: "kvstore-admin", Client: true, Lifetime: time.Hour})
	a, b, adm := reloader(t, dir, "a"), reloader(t, dir, "b"), reloader(t, dir, "adm")
	peersOnly := func(c *x509.Certificate) error {
		if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
			return errors.New("not a peer certificate")
		}
		return nil
	}
	server, _ := a.MutualConfig("", peersOnly)
	admin, _ := adm.MutualConfig("", nil)
	if _, serr := handshake(admin, server); serr == nil {
		t.Fatal("the admin's client certificate was accepted on the peer port")
	}
	peer, _ := b.MutualConfig("", nil)
	if cerr, serr := handshake(peer, server); cerr != nil || serr != nil {
		t.Fatalf("a peer was refused: client %v, server %v", cerr, serr)
	}
}
