// Package shed owns a node's bound on requests in flight (load shedding,
// book chapter 9): one Gate that the REST API, the gRPC API and the calls
// members make to each other all draw on, because they are one load on one
// node. A request over the bound is refused at once, with a hint to retry,
// rather than queued, so a node under more load than it can serve stays
// fast for the requests it accepts.
package shed

// Gate bounds the requests in flight. A nil Gate admits everything.
type Gate struct {
	slots chan struct{}
}

// New returns a Gate of max slots; nil (no bound) when max ≤ 0.
func New(max int) *Gate {
	if max <= 0 {
		return nil
	}
	return &Gate{slots: make(chan struct{}, max)}
}

// TryEnter takes a slot if one is free. Every true must be followed by
// one Leave.
func (g *Gate) TryEnter() bool {
	if g == nil {
		return true
	}
	select {
	case g.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// Leave frees the slot TryEnter took.
func (g *Gate) Leave() {
	if g != nil {
		<-g.slots
	}
}

// Message is the reason given to a request that was shed.
const Message = "overloaded: too many requests in flight, retry later"
