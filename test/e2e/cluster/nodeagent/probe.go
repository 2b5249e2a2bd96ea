package nodeagent

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// dialer connects to a port inside the pod's network namespace.
type dialer func(ctx context.Context, port int) (net.Conn, error)

// probeOnce runs one probe attempt the way the kubelet does: HTTP 200–399
// or a TCP connect is a success. The probe's host field is ignored: the
// agent always probes the pod itself.
func probeOnce(ctx context.Context, p *corev1.ProbeHandler, c *corev1.Container, dial dialer) (bool, string) {
	switch {
	case p.HTTPGet != nil:
		port, err := resolvePort(p.HTTPGet.Port, c)
		if err != nil {
			return false, err.Error()
		}
		scheme := "http"
		if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		path := p.HTTPGet.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s://127.0.0.1:%d%s", scheme, port, path), nil)
		if err != nil {
			return false, err.Error()
		}
		req.Header.Set("User-Agent", "kube-probe/1.37")
		for _, h := range p.HTTPGet.HTTPHeaders {
			if strings.EqualFold(h.Name, "Host") {
				req.Host = h.Value
			} else {
				req.Header.Add(h.Name, h.Value)
			}
		}
		tr := &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the kubelet does not verify probe certificates either
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dial(ctx, port)
			},
		}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			return false, fmt.Sprintf("Get %q: %v", req.URL.String(), err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		if resp.StatusCode >= 200 && resp.StatusCode < 400 {
			return true, ""
		}
		return false, fmt.Sprintf("HTTP probe failed with statuscode: %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, c)
		if err != nil {
			return false, err.Error()
		}
		conn, err := dial(ctx, port)
		if err != nil {
			return false, fmt.Sprintf("dial tcp port %d: %v", port, err)
		}
		conn.Close()
		return true, ""
	case p.Exec != nil:
		return false, "exec probes are not supported by the local node agent"
	case p.GRPC != nil:
		return false, "gRPC probes are not supported by the local node agent"
	}
	return false, "probe has no handler"
}

func resolvePort(port intstr.IntOrString, c *corev1.Container) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("port %q not found in container %s", port.StrVal, c.Name)
}

// probeLoop runs a probe on its schedule until ctx ends. report is called
// after every failed attempt (crossed is true on the attempt that reaches the
// failure threshold) and once each time consecutive successes reach the
// success threshold.
func probeLoop(ctx context.Context, p *corev1.Probe, c *corev1.Container, dial dialer, report func(ok bool, msg string, crossed bool)) {
	period := secs(p.PeriodSeconds, 10)
	timeout := secs(p.TimeoutSeconds, 1)
	successThreshold := max(int(p.SuccessThreshold), 1)
	failureThreshold := int(p.FailureThreshold)
	if failureThreshold < 1 {
		failureThreshold = 3
	}
	successes, failures := 0, 0
	wait := time.Duration(p.InitialDelaySeconds) * time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = period
		pctx, cancel := context.WithTimeout(ctx, timeout)
		ok, msg := probeOnce(pctx, &p.ProbeHandler, c, dial)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if ok {
			successes, failures = successes+1, 0
			if successes == successThreshold {
				report(true, "", true)
			}
			continue
		}
		successes, failures = 0, failures+1
		report(false, msg, failures == failureThreshold)
	}
}

func secs(v int32, def int) time.Duration {
	if v <= 0 {
		return time.Duration(def) * time.Second
	}
	return time.Duration(v) * time.Second
}
