package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// tlsStreamLayer carries raft's peer traffic over mutual TLS: both ends
// present a certificate signed by the cluster CA (the tls.Config decides),
// so a process without the peer certificate can neither join nor listen in.
type tlsStreamLayer struct {
	net.Listener
	advertise net.Addr
	config    *tls.Config
	source    net.Addr
}

func (t *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, LocalAddr: t.source}
	conn, err := tls.DialWithDialer(d, "tcp", string(address), t.config)
	if err != nil {
		return nil, err
	}
	return conn, nil
}

func (t *tlsStreamLayer) Addr() net.Addr {
	if t.advertise != nil {
		return t.advertise
	}
	return t.Listener.Addr()
}

// newTransport returns raft's network transport on plain TCP when
// peerTLS is nil (development), else on mutual TLS.
func newTransport(bind, advertise string, peerTLS *tls.Config, logger raftLogger) (raft.Transport, error) {
	// The advertised address is kept as given, never resolved: it is what
	// the configuration records for this member (bootstrap records it), and
	// a pod's stable DNS name outlives the IP it resolves to today.
	var adv net.Addr
	if advertise != "" {
		if _, _, err := net.SplitHostPort(advertise); err != nil {
			return nil, fmt.Errorf("cluster: the advertised peer address %q is not host:port: %w", advertise, err)
		}
		adv = stringAddr(advertise)
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	if adv == nil {
		if tcp, ok := ln.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
			_ = ln.Close()
			return nil, errors.New("cluster: the peer address binds all interfaces; set an advertised address")
		}
	}
	// A node bound to one address also dials from it, so that peers (and a
	// test's fault-injecting proxies) can tell members apart by source.
	var source net.Addr
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() {
		source = &net.TCPAddr{IP: tcp.IP}
	}
	var layer raft.StreamLayer
	if peerTLS == nil {
		layer = &plainStreamLayer{Listener: ln, advertise: adv, source: source}
	} else {
		layer = &tlsStreamLayer{Listener: tls.NewListener(ln, peerTLS), advertise: adv, config: peerTLS, source: source}
	}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 4,
		Timeout: 10 * time.Second,
		Logger:  logger,
	}), nil
}

type plainStreamLayer struct {
	net.Listener
	advertise net.Addr
	source    net.Addr
}

func (p *plainStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, LocalAddr: p.source}
	return d.Dial("tcp", string(address))
}

func (p *plainStreamLayer) Addr() net.Addr {
	if p.advertise != nil {
		return p.advertise
	}
	return p.Listener.Addr()
}

type stringAddr string

func (s stringAddr) Network() string { return "tcp" }
func (s stringAddr) String() string  { return string(s) }
