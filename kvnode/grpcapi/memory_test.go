package grpcapi_test

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/grpcapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/shed"
)

// refuseAll is a guard that admits nobody (as --client-auth=mtls does for
// a caller without a client certificate, whom the TLS handshake still
// accepts: VerifyClientCertIfGiven).
type refuseAll struct{}

func (refuseAll) Identify(*tls.ConnectionState) (access.Client, error) {
	return access.Client{}, &access.Error{Kind: access.ErrUnauthenticated, Reason: "nobody"}
}

// A caller cannot make the node hold request messages beyond its gate.
// grpc-go reads a unary call's whole message before any interceptor runs,
// opening the stream's flow-control window to the message's declared
// length (up to MaxRecvMsgSize), and nothing times a slow message out: a
// caller that sends all but the last byte of a maximal Put on many streams
// and keeps them open would pin that much memory per stream. The gate is
// taken when the headers arrive (tap), so with a gate of 1 slot, 2
// connections × 64 such streams pin one message, not 128.
func TestStalledStreamsAreBoundedByTheGate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := grpcapi.NewServer(grpcapi.Config{KV: failing{}, Guard: refuseAll{}, Gate: shed.New(1), Timeout: time.Second})
	go func() { _ = s.Serve(ln) }()
	defer s.Stop()

	const conns, streams = 2, 64
	msgLen := core.DefaultLimits.MaxValueBytes + core.DefaultLimits.MaxKeyBytes // within MaxRecvMsgSize
	before := heap()
	var wg sync.WaitGroup
	var hold []net.Conn
	var mu sync.Mutex
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := stallingClient(t, ln.Addr().String(), streams, msgLen)
			mu.Lock()
			hold = append(hold, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	time.Sleep(500 * time.Millisecond)
	grown := heap() - before
	t.Logf("heap grew by %d MiB with %d unauthenticated streams that never finish their message", grown>>20, conns*streams)
	for _, c := range hold {
		_ = c.Close()
	}
	if grown > 16<<20 {
		t.Errorf("an unauthenticated caller pinned %d MiB of the node's memory (gate of 1 slot, guard refusing all)", grown>>20)
	}
}

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// stallingClient opens streams on one HTTP/2 connection, each a Put whose
// message declares msgLen bytes, sends msgLen-1 of them (as flow control
// allows) and stops. It returns the open connection.
func stallingClient(t *testing.T, addr string, streams, msgLen int) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Error(err)
		return nil
	}
	_, _ = c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, c)
	var wmu sync.Mutex
	_ = fr.WriteSettings()

	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	connWin := int64(65535)
	initWin := int64(65535)
	win := map[uint32]int64{}
	ended := map[uint32]bool{} // streams the server answered or reset
	go func() {                // reads the server's frames: settings, window updates, pings
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				mu.Lock()
				connWin = -1 << 40
				cond.Broadcast()
				mu.Unlock()
				return
			}
			mu.Lock()
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
						for id := range win {
							win[id] += int64(v) - initWin
						}
						initWin = int64(v)
					}
					wmu.Lock()
					_ = fr.WriteSettingsAck()
					wmu.Unlock()
				}
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					connWin += int64(f.Increment)
				} else {
					win[f.StreamID] += int64(f.Increment)
				}
			case *http2.RSTStreamFrame:
				ended[f.StreamID] = true
			case *http2.HeadersFrame:
				if f.StreamEnded() {
					ended[f.StreamID] = true
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					wmu.Lock()
					_ = fr.WritePing(true, f.Data)
					wmu.Unlock()
				}
			}
			cond.Broadcast()
			mu.Unlock()
		}
	}()

	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	left := map[uint32]int{}
	for i := range streams {
		id := uint32(2*i + 1)
		hb.Reset()
		for _, h := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/keyvalue.v1.KeyValue/Put"}, {":authority", addr}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
		}
		mu.Lock()
		win[id] += initWin
		mu.Unlock()
		wmu.Lock()
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true})
		wmu.Unlock()
		left[id] = 5 + msgLen - 1
	}
	first := map[uint32]bool{}
	chunk := make([]byte, 16384)
	deadline := time.Now().Add(60 * time.Second)
	for len(left) > 0 && time.Now().Before(deadline) {
		progressed := false
		for id, n := range left {
			mu.Lock()
			if ended[id] {
				mu.Unlock()
				delete(left, id)
				progressed = true
				continue
			}
			w := min(int64(n), int64(len(chunk)), connWin, win[id])
			if !first[id] && w < 5 {
				w = 0 // the message header goes in one frame
			}
			if w > 0 {
				connWin -= w
				win[id] -= w
			}
			mu.Unlock()
			if w <= 0 {
				continue
			}
			buf := chunk[:w]
			if !first[id] {
				buf = make([]byte, w)
				buf[0] = 0
				binary.BigEndian.PutUint32(buf[1:5], uint32(msgLen))
				first[id] = true
			}
			wmu.Lock()
			err := fr.WriteData(id, false, buf)
			wmu.Unlock()
			if err != nil {
				t.Error(err)
				return c
			}
			left[id] = n - int(w)
			if left[id] == 0 {
				delete(left, id)
			}
			progressed = true
		}
		if !progressed {
			mu.Lock()
			cond.Wait()
			mu.Unlock()
		}
	}
	if len(left) > 0 {
		t.Errorf("%d streams still had bytes to send", len(left))
	}
	return c
}
