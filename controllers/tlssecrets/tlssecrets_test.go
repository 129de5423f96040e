package tlssecrets

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

func TestIssueAndRenew(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	kvs := testutil.StoredKVS("demo")
	caSecret, ca, err := BuildCA(kvs, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	// An existing CA is kept.
	again, _, _ := BuildCA(kvs, caSecret, now.Add(time.Hour))
	if string(again.Data[CAKey]) != string(caSecret.Data[CAKey]) {
		t.Fatal("the CA was replaced")
	}
	s, err := BuildServing(kvs, ca, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(s.Data[TLSCert])
	cert, _ := x509.ParseCertificate(b.Bytes)
	for _, name := range []string{"demo.default.svc", "demo-0.demo-peers.default.svc", "demo-2.demo-peers.default.svc.cluster.local"} {
		if err := cert.VerifyHostname(name); err != nil {
			t.Errorf("server certificate does not cover %s: %v", name, err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "demo.default.svc", CurrentTime: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Data[CAKey]; ok {
		t.Fatal("the CA key must not be in the Secret the pods mount")
	}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{{0, false}, {60 * 24 * time.Hour, false}, {61 * 24 * time.Hour, true}, {100 * 24 * time.Hour, true}} {
		if got, _ := NeedsRenewal(s.Data[TLSCert], 67, now.Add(tc.at)); got != tc.want {
			t.Errorf("renewal after %v = %v, want %v (lifetime 90 days, renew at 67%%)", tc.at, got, tc.want)
		}
	}
	if got, _ := NeedsRenewal([]byte("garbage"), 67, now); !got {
		t.Fatal("an unreadable certificate must be reissued")
	}
}

// A store named like the admin's common name must not make its members
// admins: the peer certificate's name is one no store can have.
func TestPeerCertificateIsNeverTheAdmin(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	kvs := testutil.StoredKVS(AdminCN)
	_, ca, err := BuildCA(kvs, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	s, err := BuildServing(kvs, ca, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(s.Data[PeerCert])
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName == AdminCN {
		t.Fatalf("the peer certificate of store %q is named %q, the admin's name", kvs.Name, cert.Subject.CommonName)
	}
}
