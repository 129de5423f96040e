package cluster

import (
	"sync"
	"time"
)

// The read lease lets the leader answer linearizable reads without a
// quorum round for a while after one. docs/read-consistency.md has the
// whole argument; in short:
//
//   - A quorum round (quorumRound) commits an empty entry that the leader
//     appends after the round starts, at time S on its monotonic clock. Raft
//     counts only voters towards a commit, so a quorum of voters processed
//     an AppendEntries from this leader after S.
//   - A voter that processed one refuses votes and pre-votes until it has
//     heard nothing from its leader for a heartbeat timeout, on its own
//     monotonic clock (hashicorp/raft clears a follower's leader only then),
//     and a restarted voter refuses them for a heartbeat timeout after its
//     start (restartVoteGuard). Every election needs one of those voters, so
//     no other member can lead before S + HeartbeatTimeout, as long as the
//     clocks' rates differ by less than a factor of two: the lease ends at
//     S + HeartbeatTimeout/2.
//   - The exception is a vote flagged as a leadership transfer, which
//     voters grant even while they have a leader, after the target got a
//     TimeoutNow. So a lease never holds in a term in which this node
//     started a transfer (the fence), and a TimeoutNow is acted on only in
//     the term it was sent in (timeoutNowGuard), so that a delayed one
//     cannot end a lease in a later term.
//
// Every time is a reading of the monotonic clock: a step of the wall clock
// (NTP, a person) neither lengthens nor ends a lease.
type readLease struct {
	clock func() time.Duration // monotonic; the origin does not matter
	dur   time.Duration        // 0: the lease is off

	mu sync.Mutex
	// gen counts revocations: a round renews the lease only if no
	// revocation happened since it started, so none can be undone.
	gen   uint64
	term  uint64        // the term the lease holds in
	until time.Duration // it holds while clock() < until
	// fenced is the latest term in which this node started a leadership
	// transfer (or reached while one ran): no lease holds in it or before.
	fenced uint64
	// started is the term in which the latest transfer started; its
	// TimeoutNow is labeled with it.
	started   uint64
	transfers int // transfers under way: no lease at all
}

// leaseTicket is what a quorum round took when it started.
type leaseTicket struct {
	start time.Duration
	gen   uint64
}

func newReadLease(dur time.Duration, clock func() time.Duration) *readLease {
	return &readLease{dur: dur, clock: clock}
}

// monotonicClock reads the monotonic clock: the time since it was made.
func monotonicClock() func() time.Duration {
	origin := time.Now()
	return func() time.Duration { return time.Since(origin) }
}

// begin is called when a quorum round starts, before its entry is appended.
func (l *readLease) begin() leaseTicket {
	l.mu.Lock()
	defer l.mu.Unlock()
	return leaseTicket{start: l.clock(), gen: l.gen}
}

// renew extends the lease in term after the round of t committed in that
// term, unless a revocation came since t began, the term is fenced, or a
// transfer runs. It reports whether it did.
func (l *readLease) renew(t leaseTicket, term uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dur <= 0 || t.gen != l.gen || term <= l.fenced || l.transfers > 0 {
		return false
	}
	until := t.start + l.dur
	if term != l.term || until > l.until {
		l.term, l.until = term, until
	}
	return true
}

// holds reports whether the lease covers a read now, while this node leads
// in term.
func (l *readLease) holds(term uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until > 0 && term == l.term && term > l.fenced && l.transfers == 0 && l.clock() < l.until
}

// revoke ends the lease; no round that started before can renew it.
func (l *readLease) revoke() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.revokeLocked()
}

func (l *readLease) revokeLocked() {
	l.gen++
	l.until = 0
}

// transferStarted is called before a leadership transfer starts in term:
// the lease ends, and never holds again in that term.
func (l *readLease) transferStarted(term uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.revokeLocked()
	l.transfers++
	l.started = term
	l.fenced = max(l.fenced, term)
}

// transferEnded is called when the transfer's call returned, whatever its
// outcome, in term: the fence covers every term the transfer may have run
// in.
func (l *readLease) transferEnded(term uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.revokeLocked()
	l.transfers--
	l.fenced = max(l.fenced, term)
}

// transferTerm is the term in which the latest transfer started (0: none).
func (l *readLease) transferTerm() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.started
}
