// java -cp "$KAFKA_LIBS/*" tools/kafka/AclApply.java ADMIN.properties BINDINGS
// Creates every ACL binding of BINDINGS (one per line: PRINCIPAL RESOURCE PATTERN NAME
// OPERATION, e.g. "User:x topic literal taskbus.runs Read"; host *, permission Allow) with
// one admin client: kafka-acls starts a JVM per call, this one for all (tools/lib/secure.sh).
import java.io.FileInputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class AclApply {
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: AclApply ADMIN.properties BINDINGS");
            System.exit(2);
        }
        Properties props = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) {
            props.load(in);
        }
        List<AclBinding> bindings = new ArrayList<>();
        int lineNo = 0;
        for (String line : Files.readAllLines(Path.of(args[1]))) {
            lineNo++;
            String t = line.trim();
            if (t.isEmpty() || t.startsWith("#"))
                continue;
            String[] f = t.split("\\s+");
            if (f.length != 5) {
                System.err.println(args[1] + ":" + lineNo + ": expected PRINCIPAL RESOURCE PATTERN NAME OPERATION");
                System.exit(2);
            }
            ResourceType rt = ResourceType.fromString(f[1].replace("-", "_").toUpperCase(Locale.ROOT));
            PatternType pt = PatternType.fromString(f[2].toUpperCase(Locale.ROOT));
            AclOperation op = AclOperation.fromString(f[4].toUpperCase(Locale.ROOT));
            if (rt == ResourceType.UNKNOWN || pt == PatternType.UNKNOWN || op == AclOperation.UNKNOWN) {
                System.err.println(args[1] + ":" + lineNo + ": unknown resource, pattern or operation: " + t);
                System.exit(2);
            }
            bindings.add(new AclBinding(new ResourcePattern(rt, f[3], pt),
                    new AccessControlEntry(f[0], "*", op, AclPermissionType.ALLOW)));
        }
        try (Admin admin = Admin.create(props)) {
            admin.createAcls(bindings).all().get();
        }
        System.out.println("created " + bindings.size() + " ACL bindings");
    }
}
