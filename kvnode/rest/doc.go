// Package rest owns the HTTP API of a kvnode: the book's table 5-1 on
// gorilla/mux with the book's bugs fixed, and the middleware that protects
// it (load shedding, per-client throttling, request deadlines).
//
//	PUT    /v1/key/{key}   body = value          201 Created
//	GET    /v1/key/{key}   200 + raw value       404 when missing
//	DELETE /v1/key/{key}   200, also when missing (idempotent)
//	GET    /v1/keys?prefix=&after=&limit=        a page of keys (JSON)
//
// /v1/{key} is an alias of /v1/key/{key} because the book's code and curl
// examples use it; through the alias the keys "keys" and "key/..." are not
// reachable (use /v1/key/keys). Keys may contain "/". GET reads are
// linearizable; ?consistency=stale reads this node's copy.
//
// Every error is a one-line text/plain message; statusFor is the one place
// where core errors become status codes.
package rest
