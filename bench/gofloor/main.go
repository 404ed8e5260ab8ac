// Command gofloor is the Go floor of driftguard's benchmark: the least a client-go
// controller does to undo a change. A shared informer on ConfigMaps (one namespace, the
// floor's label selector) and, when an object's data differs from what it should be, one
// server-side apply (force, field manager bench-go-floor) of the whole object. No work
// queue, no status, no Events: each differing event is applied at once in its own
// goroutine, which is as fast as client-go goes.
//
//	gofloor --kubeconfig K --namespace NS --count 250
//
// Applies the count objects first, prints "ready" on stdout, then runs until killed.
// Same objects and labels as bench/floorloop.py (the Python floor).
package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"sync"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	manager     = "bench-go-floor"
	floorLabel  = "bench.driftguard.io/floor"
	floorSelect = floorLabel + "=true"
)

// desired mirrors workload.floor_configmap: the blueprint value of object i.
func desired(namespace string, i int) *applycorev1.ConfigMapApplyConfiguration {
	return applycorev1.ConfigMap(fmt.Sprintf("floor-%03d", i), namespace).
		WithLabels(map[string]string{floorLabel: "true"}).
		WithData(map[string]string{"a": "1", "b": "two", "c": fmt.Sprintf("object-%d", i)})
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the floor's identity")
	namespace := flag.String("namespace", "", "namespace of the floor's ConfigMaps")
	count := flag.Int("count", 0, "how many ConfigMaps")
	flag.Parse()
	if err := run(*kubeconfig, *namespace, *count); err != nil {
		fmt.Fprintln(os.Stderr, "gofloor:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, namespace string, count int) error {
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	// No client-side rate limit (client-go's default is 5 requests/s), protobuf where the
	// server speaks it: the fastest client-go there is.
	config.QPS = -1
	config.ContentType = "application/vnd.kubernetes.protobuf"
	config.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	config.UserAgent = "bench-go-floor/1"
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	want := make(map[string]*applycorev1.ConfigMapApplyConfiguration, count)
	for i := range count {
		manifest := desired(namespace, i)
		want[*manifest.Name] = manifest
	}
	options := metav1.ApplyOptions{FieldManager: manager, Force: true}
	apply := func(manifest *applycorev1.ConfigMapApplyConfiguration) {
		if _, err := client.CoreV1().ConfigMaps(namespace).Apply(ctx, manifest, options); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "gofloor: apply:", err)
		}
	}
	var group sync.WaitGroup
	limit := make(chan struct{}, 16)
	for _, manifest := range want {
		group.Add(1)
		limit <- struct{}{}
		go func() {
			defer group.Done()
			defer func() { <-limit }()
			apply(manifest)
		}()
	}
	group.Wait()

	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = floorSelect }))
	informer := factory.Core().V1().ConfigMaps().Informer()
	check := func(obj any) {
		live, ok := obj.(*corev1.ConfigMap)
		if !ok {
			return
		}
		manifest := want[live.Name]
		if manifest == nil || maps.Equal(live.Data, manifest.Data) {
			return
		}
		go apply(manifest)
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    check,
		UpdateFunc: func(_, obj any) { check(obj) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return fmt.Errorf("informer did not sync")
	}
	fmt.Println("ready")
	<-ctx.Done()
	factory.Shutdown()
	return nil
}
