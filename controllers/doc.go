// Package controllers owns the reconciliation of KeyValueStores into
// running kvnode clusters. Each kind of child object has its own package
// with a pure Build function (tlssecrets, services, statefulset, pdb,
// hpa); membership plans and makes the Raft membership changes. This
// package runs them in order, applies what they build with server-side
// apply, and writes status once per reconcile.
package controllers
