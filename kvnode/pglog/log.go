package pglog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
)

// Channel is the NOTIFY channel a committed write wakes the nodes on.
const Channel = "kv_transactions"

// Bounds of one write transaction: the writes that queued while the last
// one was on its way, up to these.
const (
	maxBatchEvents = 512
	maxBatchBytes  = 4 << 20
	// catchUpRows bounds the rows one catch-up query returns (values are
	// at most a MiB each).
	catchUpRows = 128
)

// Log is a core.Replicator whose log is a PostgreSQL table.
type Log struct {
	cfg   Config
	store *core.Store
	pool  *pgxpool.Pool
	br    *breaker
	log   *slog.Logger

	// closing is closed by Close: Propose takes no more writes, the
	// writer commits what is queued and ends (writerDone). proposals is
	// never closed, so a late Propose cannot panic; one that slips in
	// after the writer ended takes its write back (see Propose).
	closeOnce  sync.Once
	closed     atomic.Bool
	closing    chan struct{}
	proposals  chan *proposal
	writerDone chan struct{}

	stop    chan struct{}
	bg      context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	kick    chan struct{}
	roundCh chan struct{}

	rmu     sync.Mutex
	pending *round

	migrated atomic.Bool
	synced   atomic.Bool
	head     atomic.Uint64 // the highest head sequence seen
	broken   atomic.Pointer[error]
}

type proposal struct {
	ctx context.Context
	e   core.Event
	// state is queued until the writer sends the write (sending), and
	// queued again if it certainly was not applied. A caller whose
	// context ends while it is queued takes it back (abandoned): the
	// write is then never sent, and the caller can say so.
	state atomic.Int32
	done  chan struct{}
	seq   uint64
	err   error
}

const (
	queued int32 = iota
	sending
	abandoned
)

type round struct {
	done chan struct{}
	seq  uint64
	err  error
}

// Open connects to the log, creates or migrates its schema, and starts
// following it into store; reads wait until the store has been loaded.
// It fails for settings that cannot work and for a database it must not
// use (ErrForeignDatabase). A server it cannot reach within ctx is not an
// error: the node starts unready and keeps trying.
func Open(ctx context.Context, cfg Config, store *core.Store) (*Log, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pc, err := cfg.poolConfig()
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres pool: %w", redact(err, cfg.Password))
	}
	bg, cancel := context.WithCancel(context.Background())
	l := &Log{
		cfg: cfg, store: store, pool: pool, br: newBreaker(), log: cfg.Logger,
		proposals: make(chan *proposal, 4096), writerDone: make(chan struct{}), closing: make(chan struct{}),
		stop: make(chan struct{}), bg: bg, cancel: cancel,
		kick: make(chan struct{}, 1), roundCh: make(chan struct{}, 1),
	}
	if err := l.migrate(ctx); err != nil && !unreachable(err) {
		cancel()
		pool.Close()
		return nil, err
	} else if err != nil {
		l.log.Warn("postgres not reachable yet: starting unready, and trying again", "error", l.clean(err))
	}
	go l.writer()
	l.wg.Add(3)
	go l.follow()
	go l.rounds()
	go l.prune()
	return l, nil
}

// clean is err's text without the password, for logs.
func (l *Log) clean(err error) string { return redact(err, l.cfg.Password).Error() }

func (l *Log) migrate(ctx context.Context) error {
	if l.migrated.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*l.cfg.QueryTimeout)
	defer cancel()
	if err := l.br.allow(); err != nil {
		return err
	}
	from, err := migrate(ctx, l.pool, l.cfg.Store)
	l.br.done(err)
	if err != nil {
		return redact(err, l.cfg.Password)
	}
	if from != SchemaVersion {
		l.log.Info("postgres schema migrated", "from", from, "to", SchemaVersion)
	}
	l.migrated.Store(true)
	return nil
}

// fail records an error the node cannot get past by itself: it stops
// being ready and live, so that it is restarted.
func (l *Log) fail(err error) {
	if l.broken.CompareAndSwap(nil, &err) {
		l.log.Error("the postgres log cannot be followed: restart needed", "error", l.clean(err))
	}
}

// Ready reports whether the node can serve: the log has been loaded, the
// circuit to PostgreSQL is closed, and nothing is broken.
func (l *Log) Ready() error {
	if err := l.Live(); err != nil {
		return err
	}
	if err := l.br.open(); err != nil {
		return redact(err, l.cfg.Password)
	}
	if !l.synced.Load() {
		return errors.New("loading the store from postgres")
	}
	return nil
}

// Live fails once the node cannot go on without a restart.
func (l *Log) Live() error {
	if p := l.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// Status is what metrics show of the log.
type Status struct {
	// Head is the highest sequence this node has seen committed.
	Head uint64
	// Applied is the last sequence applied to the store.
	Applied uint64
	// Open is true while the circuit to PostgreSQL is open.
	Open bool
}

// Status reports the node's place in the log.
func (l *Log) Status() Status {
	return Status{Head: l.head.Load(), Applied: l.store.AppliedIndex(), Open: l.br.open() != nil}
}

func (l *Log) noteHead(seq uint64) {
	for {
		h := l.head.Load()
		if seq <= h || l.head.CompareAndSwap(h, seq) {
			return
		}
	}
}

func (l *Log) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Propose writes e to the log and returns once its transaction has
// committed, after waiting (within ctx) for this node to apply it so that
// its own stale reads see it. A write that committed is acknowledged even
// if that wait runs out: it is durable, and every node will apply it.
func (l *Log) Propose(ctx context.Context, e core.Event) error {
	if e.Type != core.EventPut && e.Type != core.EventDelete {
		// The log holds client writes only; a follower would stop at
		// anything else.
		return fmt.Errorf("%w: the postgres log takes PUT and DELETE, not %v", core.ErrCorruptEvent, e.Type)
	}
	if l.closed.Load() {
		return fmt.Errorf("%w: shutting down", core.ErrUnavailable)
	}
	p := &proposal{ctx: ctx, e: e, done: make(chan struct{})}
	select {
	case l.proposals <- p:
	case <-l.closing:
		return fmt.Errorf("%w: shutting down", core.ErrUnavailable)
	case <-ctx.Done():
		return fmt.Errorf("%w: the write queue is full: %v", core.ErrUnavailable, ctx.Err())
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		if p.state.CompareAndSwap(queued, abandoned) {
			return fmt.Errorf("%w: not sent before the deadline: %v", core.ErrUnavailable, ctx.Err())
		}
		return ctx.Err() // on its way: the write may still commit
	case <-l.writerDone:
		// Queued as the writer ended: nobody will send it, unless the
		// writer took it in its last batch.
		if p.state.CompareAndSwap(queued, abandoned) {
			return fmt.Errorf("%w: shutting down", core.ErrUnavailable)
		}
		<-p.done
	}
	if p.err != nil {
		return p.err
	}
	if l.store.AppliedIndex() < p.seq {
		l.wake()
		// Not past Close: nothing applies the log after it.
		wctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(l.bg, cancel)
		_ = l.store.WaitApplied(wctx, p.seq)
		stop()
		cancel()
	}
	return nil
}

// writer commits the queued writes, a batch at a time, until Close has
// closed the queue and every write in it has been answered.
func (l *Log) writer() {
	defer close(l.writerDone)
	for {
		var first *proposal
		select {
		case first = <-l.proposals:
		case <-l.closing:
			// Commit what is queued, then end.
			select {
			case first = <-l.proposals:
			default:
				return
			}
		}
		batch, size := []*proposal{first}, len(first.e.Key)+len(first.e.Value)
	fill:
		for len(batch) < maxBatchEvents && size < maxBatchBytes {
			select {
			case p := <-l.proposals:
				batch = append(batch, p)
				size += len(p.e.Key) + len(p.e.Value)
			default:
				break fill
			}
		}
		l.write(batch)
	}
}

// write commits a batch, retrying while it certainly was not applied, and
// answers each write.
func (l *Log) write(batch []*proposal) {
	bo := backoff{base: 10 * time.Millisecond, max: time.Second}
	for {
		// A write whose caller gave up while it was queued is not sent:
		// its caller was told it was not applied.
		live := batch[:0]
		for _, p := range batch {
			if !p.state.CompareAndSwap(queued, sending) {
				continue // abandoned by its caller, who was told
			}
			live = append(live, p)
		}
		batch = live
		if len(batch) == 0 {
			return
		}
		err := l.br.allow()
		var last uint64
		if err == nil {
			last, err = l.commit(batch)
			l.br.done(err)
		}
		if err == nil {
			l.noteHead(last)
			first := last - uint64(len(batch)) + 1
			for i, p := range batch {
				p.answer(first+uint64(i), nil)
			}
			return
		}
		applied, retry := classify(err)
		msg := l.clean(err)
		switch {
		case !applied && retry && !l.stopping() && l.Live() == nil:
			for _, p := range batch {
				p.state.Store(queued)
			}
			l.sleep(bo.next())
			continue
		case !applied:
			for _, p := range batch {
				p.answer(0, fmt.Errorf("%w: postgres: %s", core.ErrUnavailable, msg))
			}
		default:
			for _, p := range batch {
				p.answer(0, fmt.Errorf("%w: postgres: %s", core.ErrIndeterminate, msg))
			}
		}
		return
	}
}

func (p *proposal) answer(seq uint64, err error) {
	p.seq, p.err = seq, err
	close(p.done)
}

func (l *Log) stopping() bool { return l.closed.Load() }

// sleep waits d before a retry; callers may abandon their writes
// meanwhile.
func (l *Log) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-l.stop:
	}
}

// commit sends the batch as one implicit transaction (one round trip):
// take the sequences from kv_head (which stays locked until the commit:
// see the package comment), insert the log rows, apply them to kv_state,
// and notify the nodes. It returns the last sequence taken.
func (l *Log) commit(batch []*proposal) (uint64, error) {
	ctx, cancel := context.WithTimeout(l.bg, l.cfg.QueryTimeout)
	defer cancel()
	n := len(batch)
	types := make([]int16, n)
	keys := make([][]byte, n)
	values := make([][]byte, n)
	final := make(map[string]int, n) // key → its last event in the batch
	for i, p := range batch {
		types[i], keys[i] = int16(p.e.Type), []byte(p.e.Key)
		if p.e.Type == core.EventPut {
			values[i] = p.e.Value
			if values[i] == nil {
				values[i] = []byte{}
			}
		}
		final[p.e.Key] = i
	}
	var putK, putV, delK [][]byte
	for i, p := range batch {
		if final[p.e.Key] != i {
			continue
		}
		if p.e.Type == core.EventPut {
			putK, putV = append(putK, keys[i]), append(putV, values[i])
		} else {
			delK = append(delK, keys[i])
		}
	}
	// Two statements in one implicit transaction. The first takes the
	// sequences, waiting for the head row's lock. The second makes the
	// changes: under READ COMMITTED it takes its snapshot when it starts,
	// after the lock was granted, so it sees every write committed before
	// this one. (In one statement, the snapshot would be older than the
	// lock wait: a DELETE of a key that the transaction just ahead had
	// inserted would miss it, and kv_state would keep a key the log
	// deleted.) Every change hangs on the head row: without it (a damaged
	// database) nothing is written. The data-modifying CTEs touch disjoint
	// rows (a key is put or deleted, not both), so their order does not
	// matter.
	b := &pgx.Batch{}
	b.Queue(`UPDATE kv_head SET sequence = sequence + $1 RETURNING sequence`, int64(n))
	b.Queue(`WITH h AS (SELECT sequence FROM kv_head),
		ins AS (INSERT INTO transactions (sequence, event_type, key, value)
			SELECT h.sequence - $1 + e.n, e.t, e.k, e.v
			FROM h, unnest($2::smallint[], $3::bytea[], $4::bytea[]) WITH ORDINALITY AS e(t, k, v, n)),
		up AS (INSERT INTO kv_state (key, value)
			SELECT u.k, u.v FROM h, unnest($5::bytea[], $6::bytea[]) AS u(k, v)
			ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value),
		del AS (DELETE FROM kv_state WHERE key = ANY($7::bytea[]) AND EXISTS (SELECT FROM h))
		SELECT FROM h`, int64(n), types, keys, values, putK, putV, delK)
	b.Queue(`SELECT pg_notify($1, '')`, Channel)
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return 0, notSent{err}
	}
	defer conn.Release()
	res := conn.SendBatch(ctx, b)
	var head int64
	err = res.QueryRow().Scan(&head)
	for i := 1; i < b.Len() && err == nil; i++ {
		_, err = res.Exec()
	}
	// Close reads up to ReadyForQuery, which comes after the commit.
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, pgx.ErrNoRows) {
		// The statement changed nothing: kv_head has lost its row.
		err = errors.New("table kv_head has no row: the database was changed behind the log's back")
		l.fail(err)
		return 0, notSent{err}
	}
	if err != nil {
		return 0, err
	}
	return uint64(head), nil
}

// notSent wraps an error that happened before anything was sent.
type notSent struct{ error }

func (e notSent) Unwrap() error { return e.error }

// classify says whether a failed write may have been applied, and
// whether it is worth sending again. Only two things prove it was not:
// nothing was sent, or the server answered with an ERROR, which rolled
// the implicit transaction back. A FATAL may come after a local commit
// (a backend terminated while it waits for a synchronous standby), and a
// connection lost after the batch went out leaves the commit unknown.
func classify(err error) (applied, retry bool) {
	var ns notSent
	if errors.As(err, &ns) || pgconn.SafeToRetry(err) || errors.Is(err, errOpen) {
		return false, !errors.Is(err, errOpen)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && cmp.Or(pe.SeverityUnlocalized, pe.Severity) == "ERROR" {
		switch pe.Code {
		case "40001", "40P01", "55P03", "57014", "53300", "57P03":
			return false, true // serialization, deadlock, lock or statement timeout, no room
		}
		return false, false
	}
	return true, false
}

// backoff is exponential backoff with full jitter: each wait is uniform
// in [0, d), d doubling from base up to max.
type backoff struct{ base, max, cur time.Duration }

func (b *backoff) next() time.Duration {
	b.cur = min(max(2*b.cur, b.base), b.max)
	return rand.N(b.cur) + time.Millisecond
}

func (b *backoff) reset() { b.cur = 0 }

// ReadBarrier returns once this node has applied every write committed
// before the call: it reads the head in a query sent after the call began
// (shared with the reads waiting with it), then waits to apply it. Both
// consistencies are the same here: no lease, no clock.
func (l *Log) ReadBarrier(ctx context.Context, _ core.Consistency) error {
	if l.closed.Load() {
		return fmt.Errorf("%w: shutting down", core.ErrUnavailable)
	}
	if err := l.Ready(); err != nil {
		return fmt.Errorf("%w: %v", core.ErrUnavailable, err)
	}
	seq, err := l.readHead(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: read the log's head: %s", core.ErrUnavailable, l.clean(err))
	}
	if err := l.Live(); err != nil {
		return fmt.Errorf("%w: %v", core.ErrUnavailable, err)
	}
	if l.store.AppliedIndex() < seq {
		l.wake()
	}
	return l.store.WaitApplied(ctx, seq)
}

// readHead joins the next round: a round not yet sent, so that its query
// starts after the caller did.
func (l *Log) readHead(ctx context.Context) (uint64, error) {
	l.rmu.Lock()
	r := l.pending
	if r == nil {
		r = &round{done: make(chan struct{})}
		l.pending = r
		select {
		case l.roundCh <- struct{}{}:
		default:
		}
	}
	l.rmu.Unlock()
	select {
	case <-r.done:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-l.stop:
		return 0, errors.New("shutting down")
	}
}

// rounds sends one head query at a time for the reads that joined it.
func (l *Log) rounds() {
	defer l.wg.Done()
	for {
		select {
		case <-l.stop:
			l.rmu.Lock()
			if r := l.pending; r != nil {
				r.err = errors.New("shutting down")
				close(r.done)
				l.pending = nil
			}
			l.rmu.Unlock()
			return
		case <-l.roundCh:
		}
		l.rmu.Lock()
		r := l.pending
		l.pending = nil
		l.rmu.Unlock()
		if r == nil {
			continue
		}
		// What was applied before the query was sent had committed by
		// then, so the head cannot be below it, unless PostgreSQL lost
		// committed transactions (a restore, an asynchronous standby
		// promoted): this node's copy is then no longer the log's.
		before := l.store.AppliedIndex()
		r.seq, r.err = l.queryHead()
		if r.err == nil && r.seq < before {
			l.fail(fmt.Errorf("the log's head in postgres is sequence %d, behind the %d this node applied: postgres lost committed writes; restart the node to load the database's state", r.seq, before))
		}
		if r.err == nil {
			l.noteHead(r.seq)
		}
		close(r.done)
	}
}

func (l *Log) queryHead() (uint64, error) {
	if err := l.br.allow(); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(l.bg, l.cfg.QueryTimeout)
	defer cancel()
	var head int64
	err := l.pool.QueryRow(ctx, `SELECT sequence FROM kv_head`).Scan(&head)
	l.br.done(err)
	return uint64(head), err
}

// follow applies the log to the store, in sequence order, for as long as
// the node runs: LISTEN wakes it, a poll covers lost notifications, and
// every (re)connection starts with a catch-up.
func (l *Log) follow() {
	defer l.wg.Done()
	bo := backoff{base: 100 * time.Millisecond, max: 5 * time.Second}
	for {
		err := l.followOnce(&bo)
		select {
		case <-l.stop:
			return
		default:
		}
		if err != nil && !errors.Is(err, errOpen) {
			l.log.Warn("following the postgres log: retrying", "error", l.clean(err))
		}
		t := time.NewTimer(bo.next())
		select {
		case <-l.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (l *Log) followOnce(bo *backoff) error {
	if err := l.migrate(l.bg); err != nil {
		if !unreachable(err) {
			l.fail(err)
		}
		return err
	}
	if err := l.br.allow(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(l.bg, l.cfg.QueryTimeout)
	conn, err := pgx.ConnectConfig(ctx, l.pool.Config().ConnConfig)
	if err == nil {
		_, err = conn.Exec(ctx, "LISTEN "+Channel)
	}
	cancel()
	l.br.done(err)
	if err != nil {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
		return err
	}
	lctx, lcancel := context.WithCancel(l.bg)
	notes := make(chan struct{}, 1)
	lost := make(chan error, 1)
	go func() {
		for {
			if _, err := conn.WaitForNotification(lctx); err != nil {
				lost <- err
				return
			}
			select {
			case notes <- struct{}{}:
			default:
			}
		}
	}()
	defer func() {
		lcancel()
		<-lost //nolint:errcheck // the listener's end, awaited; why it ended is moot now
		_ = conn.Close(context.Background())
	}()
	if !l.synced.Load() && l.store.AppliedIndex() == 0 {
		// A new node loads the state rather than replay the log.
		if err := l.resync(); err != nil {
			return err
		}
	}
	poll := time.NewTicker(l.cfg.PollInterval)
	defer poll.Stop()
	for {
		if err := l.catchUp(); err != nil {
			return err
		}
		if !l.synced.Load() {
			l.synced.Store(true)
			l.log.Info("store loaded from postgres", "sequence", l.store.AppliedIndex(), "keys", l.store.Len())
		}
		bo.reset()
		select {
		case <-l.stop:
			return nil
		case err := <-lost:
			lost <- err // for the deferred wait
			return fmt.Errorf("listening for writes: %w", err)
		case <-notes:
		case <-l.kick:
		case <-poll.C:
		}
	}
}

// catchUp applies every event committed after the store's applied
// sequence. A first row past applied+1 means the rows between were pruned:
// the state is loaded again.
func (l *Log) catchUp() error {
	for {
		applied := l.store.AppliedIndex()
		events, err := l.readEvents(applied)
		if err != nil {
			return err
		}
		if len(events) == 0 {
			return nil
		}
		if events[0].Index != applied+1 {
			l.log.Info("the log was pruned past this node: loading the state", "applied", applied, "next", events[0].Index)
			if err := l.resync(); err != nil {
				return err
			}
			continue
		}
		for i := 1; i < len(events); i++ {
			if events[i].Index != events[i-1].Index+1 {
				// Impossible by the package comment's argument: say so.
				err := fmt.Errorf("table transactions: sequence %d follows %d in one read: the log has a gap the sequencing rules out", events[i].Index, events[i-1].Index)
				l.fail(err)
				return err
			}
		}
		l.store.ApplyBatch(events)
		l.noteHead(events[len(events)-1].Index)
		if len(events) < catchUpRows {
			return nil
		}
	}
}

func (l *Log) readEvents(after uint64) ([]core.Indexed, error) {
	if err := l.br.allow(); err != nil {
		return nil, err
	}
	// Up to 128 rows of up to 1 MiB: more time than a query's.
	ctx, cancel := context.WithTimeout(l.bg, 6*l.cfg.QueryTimeout)
	defer cancel()
	rows, err := l.pool.Query(ctx, `SELECT sequence, event_type, key, value FROM transactions
		WHERE sequence > $1 ORDER BY sequence LIMIT $2`, int64(after), catchUpRows)
	if err != nil {
		l.br.done(slowRead(err))
		return nil, err
	}
	var events []core.Indexed
	for rows.Next() {
		var seq int64
		var typ int16
		var key, value []byte
		if err := rows.Scan(&seq, &typ, &key, &value); err != nil {
			rows.Close()
			l.br.done(slowRead(err))
			return nil, err
		}
		t := core.EventType(typ)
		if t != core.EventPut && t != core.EventDelete {
			rows.Close()
			err := fmt.Errorf("table transactions: sequence %d has event_type %d, neither PUT (%d) nor DELETE (%d)", seq, typ, core.EventPut, core.EventDelete)
			l.br.done(nil)
			l.fail(err)
			return nil, err
		}
		e := core.Event{Type: t, Key: string(key)}
		if t == core.EventPut {
			e.Value = value
			if e.Value == nil {
				e.Value = []byte{}
			}
		}
		events = append(events, core.Indexed{Index: uint64(seq), Event: e})
	}
	err = rows.Err()
	l.br.done(slowRead(err))
	return events, err
}

// slowRead is err as the breaker should count it after a long read: a
// deadline that passes while rows stream says the link is slow, not that
// the server is gone, and must not refuse this node's writes.
func slowRead(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// resync replaces the store with kv_state as of kv_head's sequence, read
// in one REPEATABLE READ snapshot, so that the two agree.
func (l *Log) resync() error {
	if err := l.br.allow(); err != nil {
		return err
	}
	// The whole state streams under this deadline: longer than a query's.
	ctx, cancel := context.WithTimeout(l.bg, 60*l.cfg.QueryTimeout)
	defer cancel()
	fresh := core.NewStore()
	var head int64
	err := pgx.BeginTxFunc(ctx, l.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT sequence FROM kv_head`).Scan(&head); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT key, value FROM kv_state`)
		if err != nil {
			return err
		}
		defer rows.Close()
		chunk := make([]core.Indexed, 0, 256)
		for rows.Next() {
			var key, value []byte
			if err := rows.Scan(&key, &value); err != nil {
				return err
			}
			if value == nil {
				value = []byte{}
			}
			chunk = append(chunk, core.Indexed{Event: core.Event{Type: core.EventPut, Key: string(key), Value: value}})
			if len(chunk) == cap(chunk) {
				fresh.ApplyBatch(chunk)
				chunk = chunk[:0]
			}
		}
		fresh.ApplyBatch(chunk)
		return rows.Err()
	})
	l.br.done(slowRead(err))
	if err != nil {
		return err
	}
	if applied := l.store.AppliedIndex(); uint64(head) < applied {
		err := fmt.Errorf("table kv_head: sequence %d is behind the %d this node applied: postgres lost committed writes; restart the node to load the database's state", head, applied)
		l.fail(err)
		return err
	}
	fresh.MarkApplied(uint64(head))
	pr, pw := io.Pipe()
	go func() {
		_, err := fresh.Snapshot().WriteTo(pw)
		pw.CloseWithError(err)
	}()
	if err := l.store.Restore(pr); err != nil {
		_ = pr.CloseWithError(err)
		return fmt.Errorf("load the state: %w", err)
	}
	l.noteHead(uint64(head))
	return nil
}

// prune deletes log rows more than Retain behind the head, in bounded
// steps; nodes further behind load kv_state instead.
func (l *Log) prune() {
	defer l.wg.Done()
	t := time.NewTicker(l.cfg.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if !l.migrated.Load() {
			continue
		}
		if n, err := l.pruneOnce(); err != nil && !errors.Is(err, errOpen) {
			l.log.Warn("pruning the postgres log", "error", l.clean(err))
		} else if n > 0 {
			l.log.Debug("postgres log pruned", "rows", n)
		}
	}
}

// pruneStep bounds the rows one prune deletes, so that it holds no lock
// for long.
const pruneStep = 50_000

// PruneNow prunes once; tests call it.
func (l *Log) PruneNow() (int64, error) { return l.pruneOnce() }

func (l *Log) pruneOnce() (int64, error) {
	if err := l.br.allow(); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(l.bg, l.cfg.QueryTimeout)
	defer cancel()
	tag, err := l.pool.Exec(ctx, `DELETE FROM transactions WHERE sequence <= LEAST(
			(SELECT sequence FROM kv_head) - $1,
			(SELECT min(sequence) FROM transactions) + $2)`, l.cfg.Retain, int64(pruneStep))
	l.br.done(err)
	return tag.RowsAffected(), err
}

// Close stops taking writes, commits those already queued (each within
// its caller's deadline), and then stops following the log and closes
// the connections. ctx bounds the wait for the queue.
func (l *Log) Close(ctx context.Context) error {
	first := false
	l.closeOnce.Do(func() {
		first = true
		l.closed.Store(true)
		close(l.closing)
	})
	if !first {
		return nil
	}
	var err error
	select {
	case <-l.writerDone:
	case <-ctx.Done():
		err = fmt.Errorf("writes still queued at shutdown: %w", ctx.Err())
	}
	close(l.stop)
	l.cancel()
	l.wg.Wait()
	l.pool.Close()
	return err
}
