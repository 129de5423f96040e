// Command localk8s writes what the local single-node cluster needs before
// any component starts: a PKI (CA, API server serving certificate,
// service-account keys, a client certificate and kubeconfig per
// component), the kubelet, containerd, CNI and CoreDNS configurations. The
// scripts in hack/cluster run it once per cluster directory.
//
//	hack/build-helpers.sh localk8s && bin/localk8s -dir /var/tmp/kvstore-cluster -node-ip 10.200.0.1
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
)

func main() {
	dir := flag.String("dir", "", "cluster state directory")
	nodeIP := flag.String("node-ip", "10.200.0.1", "the node's address inside the network namespace")
	node := flag.String("node-name", "kvtest", "the node's name")
	serviceIP := flag.String("service-ip", "10.0.0.1", "the kubernetes Service's ClusterIP")
	podCIDR := flag.String("pod-cidr", "10.244.0.0/24", "the pod network")
	flag.Parse()
	if *dir == "" {
		log.Fatal("-dir is required")
	}
	pki := filepath.Join(*dir, "pki")
	must(os.MkdirAll(pki, 0o700))
	now := time.Now()
	ca, err := certs.NewCA("kvstore local cluster CA", 365*24*time.Hour, now)
	must(err)
	write(filepath.Join(pki, "ca.crt"), ca.CertPEM)
	write(filepath.Join(pki, "ca.key"), ca.KeyPEM)
	year := 365 * 24 * time.Hour
	issue := func(name string, l certs.Leaf) {
		l.Lifetime = year
		c, k, err := ca.Issue(l, now)
		must(err)
		write(filepath.Join(pki, name+".crt"), c)
		write(filepath.Join(pki, name+".key"), k)
	}
	issue("apiserver", certs.Leaf{CommonName: "kube-apiserver", Server: true,
		DNSNames: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"},
		IPs:      []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(*nodeIP), net.ParseIP(*serviceIP)}})
	issue("kubelet-serving", certs.Leaf{CommonName: *node, Server: true, DNSNames: []string{*node, "localhost"}, IPs: []net.IP{net.ParseIP(*nodeIP), net.ParseIP("127.0.0.1")}})
	issue("apiserver-kubelet-client", certs.Leaf{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true})

	// The service-account token signing key pair.
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	der, err := x509.MarshalECPrivateKey(saKey)
	must(err)
	write(filepath.Join(pki, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	must(err)
	write(filepath.Join(pki, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))

	// One identity and kubeconfig per client. The controller manager is in
	// system:masters and does not use per-controller credentials: it
	// starts the first StatefulSet in about half the time.
	for _, c := range []struct{ file, cn, org string }{
		{"admin", "kubernetes-admin", "system:masters"},
		{"controller-manager", "system:kube-controller-manager", "system:masters"},
		{"scheduler", "system:kube-scheduler", ""},
		{"kubelet", "system:node:" + *node, "system:nodes"},
		{"kube-proxy", "system:kube-proxy", ""},
		{"coredns", "coredns", "system:masters"},
	} {
		var org []string
		if c.org != "" {
			org = []string{c.org}
		}
		cert, key, err := ca.Issue(certs.Leaf{CommonName: c.cn, Organization: org, Client: true, Lifetime: year}, now)
		must(err)
		write(filepath.Join(*dir, c.file+".kubeconfig"), kubeconfig(ca.CertPEM, cert, key, "https://127.0.0.1:6443"))
	}

	write(filepath.Join(*dir, "kubelet.yaml"), []byte(fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine runs cgroup v1 and has no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%[1]s/containerd/containerd.sock
address: 0.0.0.0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[2]s/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: %[2]s/kubelet-serving.crt
tlsPrivateKeyFile: %[2]s/kubelet-serving.key
clusterDomain: cluster.local
clusterDNS: [%[3]s]
resolvConf: %[1]s/resolv.conf
failSwapOn: false
podCIDR: %[4]s
serializeImagePulls: false
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%%", "imagefs.available": "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`, *dir, pki, *nodeIP, *podCIDR)))
	write(filepath.Join(*dir, "resolv.conf"), []byte("nameserver "+*nodeIP+"\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n"))
	must(os.MkdirAll(filepath.Join(*dir, "cni", "net.d"), 0o755))
	write(filepath.Join(*dir, "cni", "net.d", "10-kvtest.conflist"), []byte(fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "kvtest",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "%s"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "%s/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, *podCIDR, *dir)))
	write(filepath.Join(*dir, "containerd.toml"), []byte(fmt.Sprintf(`version = 3
root = "%[1]s/containerd/root"
state = "%[1]s/containerd/state"

[grpc]
  address = "%[1]s/containerd/containerd.sock"

[plugins.'io.containerd.cri.v1.runtime']
  # The machine lacks CAP_SYS_RESOURCE: runc may not lower oom_score_adj.
  restrict_oom_score_adj = true
  # Pod network namespaces live under the state directory, so teardown finds them.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '%[1]s/cni/net.d'
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '/usr/sbin/runc'
        SystemdCgroup = false

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = 'registry.k8s.io/pause:3.10'
`, *dir)))
	write(filepath.Join(*dir, "Corefile"), []byte(fmt.Sprintf(`.:53 {
    bind %s
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s/coredns.kubeconfig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
}
`, *nodeIP, *dir)))
	fmt.Println("wrote the PKI, kubeconfigs and configurations to", *dir)
}

func kubeconfig(ca, cert, key []byte, server string) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kvtest
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: user
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: kvtest
  context: {cluster: kvtest, user: user}
current-context: kvtest
`, server, b64(ca), b64(cert), b64(key)))
}

func write(path string, b []byte) {
	must(os.WriteFile(path, b, 0o600))
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
