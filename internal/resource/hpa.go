package resource

import (
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/parley-chat/parley/internal/naming"
)

// ConnectionsMetric is the chat server's gauge of open connections, the Pods
// metric the HPA scales on when spec.autoscaling.targetConnectionsPerPod is set.
const ConnectionsMetric = "parley_connections"

// HPABuilder builds the HorizontalPodAutoscaler (autoscaling/v2).
type HPABuilder struct{ Cluster }

// Build returns the named, empty HorizontalPodAutoscaler.
func (b *HPABuilder) Build() (Object, error) {
	return &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: objectMeta(b.Cluster, b.Name())}, nil
}

// Wanted is true when autoscaling is on.
func (b *HPABuilder) Wanted() bool { return b.Autoscaled() }

// Update sets the whole spec. Every field the API server would default is
// set here, so an unchanged spec compares equal and is not written.
func (b *HPABuilder) Update(obj Object) error {
	hpa := obj.(*autoscalingv2.HorizontalPodAutoscaler)
	a := b.Spec.Autoscaling
	setLabels(hpa, naming.Labels(b.ChatCluster.Name))

	cpu := int32(70)
	if a.TargetCPUUtilizationPercentage != nil {
		cpu = *a.TargetCPUUtilizationPercentage
	}
	metrics := []autoscalingv2.MetricSpec{{
		Type: autoscalingv2.ResourceMetricSourceType,
		Resource: &autoscalingv2.ResourceMetricSource{
			Name:   corev1.ResourceCPU,
			Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: &cpu},
		},
	}}
	if a.TargetConnectionsPerPod != nil {
		metrics = append(metrics, autoscalingv2.MetricSpec{
			Type: autoscalingv2.PodsMetricSourceType,
			Pods: &autoscalingv2.PodsMetricSource{
				Metric: autoscalingv2.MetricIdentifier{Name: ConnectionsMetric},
				Target: autoscalingv2.MetricTarget{
					Type:         autoscalingv2.AverageValueMetricType,
					AverageValue: resource.NewQuantity(int64(*a.TargetConnectionsPerPod), resource.DecimalSI),
				},
			},
		})
	}

	window := int32(300)
	if a.ScaleDownStabilizationWindow != nil {
		window = int32(a.ScaleDownStabilizationWindow.Seconds())
	}
	hpa.Spec = autoscalingv2.HorizontalPodAutoscalerSpec{
		ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: b.Name()},
		MinReplicas:    ptrTo(b.MinReplicas()),
		MaxReplicas:    a.MaxReplicas,
		Metrics:        metrics,
		Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
			// Up fast: new clients are waiting.
			ScaleUp: &autoscalingv2.HPAScalingRules{
				StabilizationWindowSeconds: ptrTo[int32](0),
				SelectPolicy:               ptrTo(autoscalingv2.MaxChangePolicySelect),
				Policies: []autoscalingv2.HPAScalingPolicy{
					{Type: autoscalingv2.PodsScalingPolicy, Value: 4, PeriodSeconds: 15},
					{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 15},
				},
			},
			// Down slowly, one pod a minute after a stable window: every pod
			// removed disconnects its WebSocket clients.
			ScaleDown: &autoscalingv2.HPAScalingRules{
				StabilizationWindowSeconds: &window,
				SelectPolicy:               ptrTo(autoscalingv2.MinChangePolicySelect),
				Policies: []autoscalingv2.HPAScalingPolicy{
					{Type: autoscalingv2.PodsScalingPolicy, Value: 1, PeriodSeconds: 60},
				},
			},
		},
	}
	return nil
}
