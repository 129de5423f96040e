// Package controllers owns the reconciliation of KeyValueStores into
// running kvnode clusters. Each kind of child object has its own package
// with a pure Build function (tlssecrets, services, statefulset,
// deployment, pdb, hpa); tlssecrets also decides when certificates are issued and renewed
// (its providers), and membership plans and makes the Raft membership
// changes. This package observes a store once, runs the steps in order
// (each ends in done, requeue or error), applies what the builders build
// with server-side apply, and writes status once per reconcile.
package controllers
