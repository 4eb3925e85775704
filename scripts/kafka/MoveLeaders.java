// Moves the leader of every partition of a topic to another in-sync replica, with every
// broker up: the replica list is reordered so that the new leader comes first (the same
// replicas, so nothing is copied), then a preferred leader election is run. Prints one
// line per partition. Run by scripts/kafka-cluster.sh move-leaders (java single-file).
//
//   java -cp 'libs/*' MoveLeaders.java BOOTSTRAP TOPIC
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewPartitionReassignment;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.ElectionNotNeededException;

public class MoveLeaders {
  public static void main(String[] args) throws Exception {
    if (args.length != 2) {
      System.err.println("usage: MoveLeaders BOOTSTRAP TOPIC");
      System.exit(2);
    }
    String topic = args[1];
    Properties props = new Properties();
    props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
    try (Admin admin = Admin.create(props)) {
      TopicDescription description = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
      Map<TopicPartition, Optional<NewPartitionReassignment>> reorder = new HashMap<>();
      Map<Integer, String> moves = new HashMap<>();
      for (TopicPartitionInfo p : description.partitions()) {
        Node leader = p.leader();
        Node next = null;
        // The next in-sync replica after the leader, in replica order: it can be elected.
        List<Node> replicas = p.replicas();
        int at = leader == null ? -1 : replicas.indexOf(leader);
        for (int i = 1; i <= replicas.size() && next == null; i++) {
          Node candidate = replicas.get(((at < 0 ? 0 : at) + i) % replicas.size());
          if (!candidate.equals(leader) && p.isr().contains(candidate)) next = candidate;
        }
        if (next == null) {
          moves.put(p.partition(), "stays on " + (leader == null ? "none" : leader.id()) + " (no other replica in sync)");
          continue;
        }
        List<Integer> order = new ArrayList<>();
        order.add(next.id());
        for (Node r : replicas) if (!r.equals(next)) order.add(r.id());
        reorder.put(new TopicPartition(topic, p.partition()), Optional.of(new NewPartitionReassignment(order)));
        moves.put(p.partition(), (leader == null ? "none" : leader.id()) + " -> " + next.id());
      }
      if (!reorder.isEmpty()) {
        admin.alterPartitionReassignments(reorder).all().get(30, TimeUnit.SECONDS);
        // A reorder of the same replicas completes at once; wait for it all the same.
        long deadline = System.currentTimeMillis() + 30_000;
        while (!admin.listPartitionReassignments(reorder.keySet()).reassignments().get(30, TimeUnit.SECONDS).isEmpty()) {
          if (System.currentTimeMillis() > deadline) throw new IllegalStateException("reassignment still running after 30 s");
          Thread.sleep(100);
        }
        Set<TopicPartition> partitions = new HashSet<>(reorder.keySet());
        Map<TopicPartition, Optional<Throwable>> results = admin.electLeaders(ElectionType.PREFERRED, partitions).partitions().get(30, TimeUnit.SECONDS);
        for (Map.Entry<TopicPartition, Optional<Throwable>> e : results.entrySet()) {
          Optional<Throwable> error = e.getValue();
          if (error.isPresent() && !(error.get() instanceof ElectionNotNeededException)) {
            moves.put(e.getKey().partition(), moves.get(e.getKey().partition()) + " failed: " + error.get().getMessage());
          }
        }
      }
      for (Map.Entry<Integer, String> m : moves.entrySet()) System.out.println(topic + "-" + m.getKey() + ": leader " + m.getValue());
    } catch (ExecutionException e) {
      System.err.println("MoveLeaders: " + e.getCause());
      System.exit(1);
    }
  }
}
