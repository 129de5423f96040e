package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kvstore-operator/kvstore-operator/kvnode/grpcapi/pb"
	"github.com/kvstore-operator/kvstore-operator/kvnode/pgenv"
	"github.com/kvstore-operator/kvstore-operator/kvnode/pglog/pgtest"
	"github.com/kvstore-operator/kvstore-operator/test/harness"
)

// postgresMode is three kvnodes in Postgres mode on one PostgreSQL
// server of their own (Debian's, fsync and synchronous_commit on).
type postgresMode struct {
	clients []pb.KeyValueClient
	pg      *pgtest.Server
	kv      *harness.Cluster
	conns   []*grpc.ClientConn
}

func startPostgresMode(kvnode, dir string) (*postgresMode, error) {
	pg, err := pgtest.New()
	if err != nil {
		return nil, err
	}
	p := &postgresMode{pg: pg}
	db, err := pg.CreateDatabase()
	if err != nil {
		p.close()
		return nil, err
	}
	p.kv, err = harness.New(harness.Options{Binary: kvnode, Dir: filepath.Join(dir, "kvnode-pg"), Insecure: true, NoProxies: true,
		ExtraArgs: []string{"--max-in-flight", "0"},
		Postgres: []string{
			pgenv.Host + "=" + pg.Socket(), pgenv.Port + "=" + strconv.Itoa(pg.Port), pgenv.Database + "=" + db,
			pgenv.Username + "=" + pgtest.User, pgenv.Password + "=" + pgtest.Password, pgenv.SSLMode + "=disable",
		}})
	if err != nil {
		p.close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.kv.StartN(ctx, 3); err != nil {
		p.kv.DumpLogs(os.Stderr)
		p.close()
		return nil, err
	}
	for _, m := range p.kv.Members() {
		waitOK(m.API + "/readyz")
		cc, err := grpc.NewClient("passthrough:///"+m.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			p.close()
			return nil, err
		}
		p.conns = append(p.conns, cc)
		p.clients = append(p.clients, pb.NewKeyValueClient(cc))
	}
	return p, nil
}

// pids are the kvnodes' and PostgreSQL's processes (the postmaster and
// its backends, one per connection), whose CPU a request costs.
func (p *postgresMode) pids() []int {
	var pids []int
	for _, m := range p.kv.Members() {
		pids = append(pids, m.Pid())
	}
	b, err := os.ReadFile(filepath.Join(p.pg.Dir, "data", "postmaster.pid"))
	if err != nil {
		return pids
	}
	master, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	pids = append(pids, master)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(master) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (p *postgresMode) close() {
	for _, c := range p.conns {
		_ = c.Close()
	}
	if p.kv != nil {
		p.kv.Close()
	}
	p.pg.Close()
}
