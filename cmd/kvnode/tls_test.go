package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
)

// issue writes a certificate from ca to dir and returns it parsed.
// storeCA makes a store's CA in dir (ca.crt) and the node's server
// certificate for 127.0.0.1 (tls.crt, tls.key), as the operator's Secret
// holds them.
func storeCA(t *testing.T, dir string) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA("store CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	issue(t, ca, dir, "tls", certs.Leaf{CommonName: "kvnode", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Lifetime: time.Hour})
	return ca
}

func issue(t *testing.T, ca *certs.CA, dir, name string, leaf certs.Leaf) *x509.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(leaf, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for file, b := range map[string][]byte{name + ".crt": certPEM, name + ".key": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, file), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	block, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Who may make the internal calls and who may use the membership API, as
// the two authorizers decide from the connection.
func TestAuthorizePeerAndAdmin(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("cluster", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := certs.NewCA("rogue", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	peer := issue(t, ca, dir, "peer", certs.Leaf{CommonName: "kv-1", Server: true, Client: true, Lifetime: time.Hour})
	issue(t, ca, dir, "tls", certs.Leaf{CommonName: "kv", Server: true, Lifetime: time.Hour})
	admin := issue(t, ca, dir, "admin", certs.Leaf{CommonName: "kvstore-admin", Client: true, Lifetime: time.Hour})
	adminAsPeer := issue(t, ca, dir, "admin-peer", certs.Leaf{CommonName: "kvstore-admin", Server: true, Client: true, Lifetime: time.Hour})
	serving := issue(t, ca, dir, "serving", certs.Leaf{CommonName: "kv", Server: true, Lifetime: time.Hour})
	roguePeer := issue(t, rogue, dir, "rogue", certs.Leaf{CommonName: "kv-1", Server: true, Client: true, Lifetime: time.Hour})

	reloader := func(name string) *certs.Reloader {
		r, err := certs.NewReloader(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"), filepath.Join(dir, "ca.crt"), 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tlsNode := &tlsSetup{adminCN: "kvstore-admin", apiCerts: reloader("tls"), peerCerts: reloader("peer")}
	plainNode := &tlsSetup{adminCN: "kvstore-admin"}
	// A node serving HTTPS without a peer certificate has no peer identity
	// to check: it is treated as plain HTTP is.
	noPeerNode := &tlsSetup{adminCN: "kvstore-admin", apiCerts: reloader("tls")}

	type conn struct {
		from string
		tls  bool
		cert *x509.Certificate
	}
	for _, c := range []struct {
		name         string
		node         *tlsSetup
		conn         conn
		peerOK, adOK bool
	}{
		{"plain HTTP from loopback", plainNode, conn{from: "127.0.0.1:40000"}, true, true},
		{"plain HTTP from IPv6 loopback", plainNode, conn{from: "[::1]:40000"}, true, true},
		{"plain HTTP from another host", plainNode, conn{from: "10.1.2.3:40000"}, false, false},
		{"HTTPS without peer TLS, another host", noPeerNode, conn{from: "10.1.2.3:40000", tls: true}, false, false},
		{"HTTPS without peer TLS, loopback", noPeerNode, conn{from: "127.0.0.1:40000", tls: true}, true, false},
		{"HTTPS, no client certificate", tlsNode, conn{from: "10.1.2.3:40000", tls: true}, false, false},
		{"HTTPS, no client certificate, even from loopback", tlsNode, conn{from: "127.0.0.1:40000", tls: true}, false, false},
		{"HTTPS, a member's peer certificate", tlsNode, conn{from: "10.1.2.3:40000", tls: true, cert: peer}, true, false},
		{"HTTPS, the admin certificate", tlsNode, conn{from: "10.1.2.3:40000", tls: true, cert: admin}, false, true},
		// A pod's certificate of a store named like the admin: it may
		// serve, so it is no admin's (and, named like the admin, no peer's).
		{"HTTPS, a peer-shaped certificate named like the admin", tlsNode, conn{from: "10.1.2.3:40000", tls: true, cert: adminAsPeer}, false, false},
		{"HTTPS, a server-only certificate", tlsNode, conn{from: "10.1.2.3:40000", tls: true, cert: serving}, false, false},
		{"HTTPS, a peer certificate from another CA", tlsNode, conn{from: "10.1.2.3:40000", tls: true, cert: roguePeer}, false, false},
	} {
		r := httptest.NewRequest("POST", "/v1/internal/propose", nil)
		r.RemoteAddr = c.conn.from
		r.TLS = nil
		if c.conn.tls {
			r.TLS = &tls.ConnectionState{}
			if c.conn.cert != nil {
				r.TLS.PeerCertificates = []*x509.Certificate{c.conn.cert}
			}
		}
		if err := c.node.authorizePeer(r); (err == nil) != c.peerOK {
			t.Errorf("%s: authorizePeer = %v, want allowed %v", c.name, err, c.peerOK)
		}
		if err := c.node.authorizeAdmin(r); (err == nil) != c.adOK {
			t.Errorf("%s: authorizeAdmin = %v, want allowed %v", c.name, err, c.adOK)
		}
	}
}

// Peer certificates are pinned to the store's members: with --peer-domain
// a certificate of the same CA that names no host of the headless Service
// (another store's, when stores share an issuer) is no peer.
func TestPeerDomainPinsPeerCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("shared issuer", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	node := &tlsSetup{adminCN: "kvstore-admin", peerDomain: "demo-peers.shop.svc"}
	for _, c := range []struct {
		names []string
		ok    bool
	}{
		{[]string{"*.demo-peers.shop.svc"}, true},
		{[]string{"demo-0.demo-peers.shop.svc"}, true},
		{[]string{"demo", "*.demo-peers.shop.svc.cluster.local", "*.demo-peers.shop.svc"}, true},
		{[]string{"*.demo-peers.shop.svc.cluster.local"}, false}, // the operator's certificates name the short form too
		{[]string{"x.demo-peers.shop.svc.attacker.example"}, false},
		{[]string{"DEMO-1.Demo-Peers.shop.svc."}, true},
		{[]string{"*.other-peers.shop.svc", "other.shop.svc"}, false},
		{[]string{"*.demo-peers.bank.svc"}, false},
		{[]string{"demo-peers.shop.svc"}, false}, // the Service, not a member
		{[]string{"x*.demo-peers.shop.svc"}, false},
		{[]string{"evil.demo-peers.shop.svcx"}, false},
		{nil, false},
	} {
		leaf := issue(t, ca, dir, "p", certs.Leaf{CommonName: "demo peer", DNSNames: c.names, Server: true, Client: true, Lifetime: time.Hour})
		if err := node.peerIdentity(leaf); (err == nil) != c.ok {
			t.Errorf("%v: %v, want accepted %v", c.names, err, c.ok)
		}
	}
	// Without --peer-domain (development) any peer certificate of the CA.
	leaf := issue(t, ca, dir, "p", certs.Leaf{CommonName: "x peer", Server: true, Client: true, Lifetime: time.Hour})
	if err := (&tlsSetup{adminCN: "kvstore-admin"}).peerIdentity(leaf); err != nil {
		t.Errorf("without --peer-domain: %v", err)
	}
}
