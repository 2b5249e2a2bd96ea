// Package serviceproxy is the local cluster's kube-proxy: it gives every
// Service one address on this machine (its cluster IP 10.a.b.c, reachable at
// 127.a.b.c, see localnet) and forwards each connection to the next ready
// endpoint of the Service's EndpointSlices, round-robin. Endpoints that go
// unready stop receiving new connections; established ones are left alone, as
// kube-proxy leaves them. For Services of type LoadBalancer it also writes
// that address into status.loadBalancer, as a cloud's controller would.
package serviceproxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/parley-chat/parley/test/e2e/cluster/localnet"
)

// Proxy forwards Service addresses to ready endpoints.
type Proxy struct {
	cs  kubernetes.Interface
	log *slog.Logger

	slices discoverylisters.EndpointSliceLister

	mu        sync.Mutex
	listeners map[string]*frontend // by "ns/name/port"
	ctx       context.Context
}

// frontend is one Service port's listener.
type frontend struct {
	ns, svc, portName string
	address           string
	l                 net.Listener
	next              uint64
}

// New returns a proxy; Run starts it.
func New(cs kubernetes.Interface, log *slog.Logger) *Proxy {
	if log == nil {
		log = slog.Default()
	}
	return &Proxy{cs: cs, log: log.With("component", "serviceproxy"), listeners: map[string]*frontend{}}
}

// Run watches Services and EndpointSlices until ctx ends.
func (p *Proxy) Run(ctx context.Context) error {
	p.mu.Lock()
	p.ctx = ctx
	p.mu.Unlock()
	factory := informers.NewSharedInformerFactory(p.cs, 0)
	svcInf := factory.Core().V1().Services().Informer()
	p.slices = factory.Discovery().V1().EndpointSlices().Lister()
	if _, err := svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.sync(obj.(*corev1.Service)) },
		UpdateFunc: func(_, obj any) { p.sync(obj.(*corev1.Service)) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if s, ok := obj.(*corev1.Service); ok {
				p.remove(s.Namespace, s.Name, nil)
			}
		},
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("serviceproxy: %v cache did not sync", typ)
		}
	}
	<-ctx.Done()
	factory.Shutdown()
	p.mu.Lock()
	for k, f := range p.listeners {
		_ = f.l.Close()
		delete(p.listeners, k)
	}
	p.mu.Unlock()
	return nil
}

func key(ns, name, port string) string { return ns + "/" + name + "/" + port }

// Address is where a Service port is reachable on this machine.
func Address(svc *corev1.Service, port int32) (string, error) {
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return "", fmt.Errorf("service %s/%s has no cluster IP", svc.Namespace, svc.Name)
	}
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil {
		return "", err
	}
	l, err := localnet.Loopback(ip)
	if err != nil {
		return "", err
	}
	return netip.AddrPortFrom(l, uint16(port)).String(), nil
}

func (p *Proxy) sync(svc *corev1.Service) {
	p.mu.Lock()
	ctx := p.ctx
	p.mu.Unlock()
	if ctx == nil || ctx.Err() != nil || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return
	}
	keep := map[string]bool{}
	for _, sp := range svc.Spec.Ports {
		if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
			continue
		}
		addr, err := Address(svc, sp.Port)
		if err != nil {
			return // headless, or a cluster IP outside the local plan (the "kubernetes" Service's is inside)
		}
		k := key(svc.Namespace, svc.Name, sp.Name)
		keep[k] = true
		p.mu.Lock()
		f, ok := p.listeners[k]
		p.mu.Unlock()
		if ok && f.address == addr {
			continue
		}
		if ok {
			_ = f.l.Close()
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			p.log.Warn("listen for service", "service", svc.Namespace+"/"+svc.Name, "address", addr, "err", err)
			continue
		}
		f = &frontend{ns: svc.Namespace, svc: svc.Name, portName: sp.Name, address: addr, l: l}
		p.mu.Lock()
		p.listeners[k] = f
		p.mu.Unlock()
		go p.serve(f)
	}
	p.remove(svc.Namespace, svc.Name, keep)
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		p.publishLoadBalancer(ctx, svc)
	}
}

// remove closes the service's listeners not in keep.
func (p *Proxy) remove(ns, name string, keep map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, f := range p.listeners {
		if f.ns == ns && f.svc == name && !keep[k] {
			_ = f.l.Close()
			delete(p.listeners, k)
		}
	}
}

func (p *Proxy) publishLoadBalancer(ctx context.Context, svc *corev1.Service) {
	l, err := localnet.LoopbackString(svc.Spec.ClusterIP)
	if err != nil {
		return
	}
	want := corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: l}}}
	if equality.Semantic.DeepEqual(svc.Status.LoadBalancer, want) {
		return
	}
	s := svc.DeepCopy()
	s.Status.LoadBalancer = want
	if _, err := p.cs.CoreV1().Services(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
		p.log.Warn("publish load balancer address", "service", s.Namespace+"/"+s.Name, "err", err)
	}
}

func (p *Proxy) serve(f *frontend) {
	for {
		c, err := f.l.Accept()
		if err != nil {
			return
		}
		go p.forward(f, c)
	}
}

// Endpoints lists a Service port's ready endpoints (loopback addresses), in a stable order.
func (p *Proxy) Endpoints(ns, svc, portName string) []string {
	slices, err := p.slices.EndpointSlices(ns).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc}))
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		var port int32
		found := false
		for _, sp := range s.Ports {
			name := ""
			if sp.Name != nil {
				name = *sp.Name
			}
			if name == portName && sp.Port != nil {
				port, found = *sp.Port, true
			}
		}
		if !found {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				l, err := localnet.LoopbackString(a)
				if err != nil {
					continue
				}
				addr := net.JoinHostPort(l, strconv.Itoa(int(port)))
				if !seen[addr] {
					seen[addr] = true
					out = append(out, addr)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func (p *Proxy) forward(f *frontend, c net.Conn) {
	eps := p.Endpoints(f.ns, f.svc, f.portName)
	p.mu.Lock()
	start := f.next
	f.next++
	p.mu.Unlock()
	for i := range eps {
		addr := eps[(int(start)+i)%len(eps)]
		up, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			continue
		}
		splice(c, up)
		return
	}
	// No ready endpoint: refuse, as kube-proxy's reject rule does.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}
