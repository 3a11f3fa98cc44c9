package io.taskbus.peers;

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.sql.Connection;
import java.sql.SQLException;
import org.quartz.utils.ConnectionProvider;

/**
 * Quartz's connections from a HikariCP pool. Quartz builds it from the properties
 * org.quartz.dataSource.ds.{url,user,maxConnections} (bean setters below) and calls
 * initialize() once, shutdown() when the scheduler stops; the pool is owned here.
 */
public final class HikariProvider implements ConnectionProvider {
    private String url;
    private String user = "taskbus";
    private int maxConnections = 10;
    private HikariDataSource pool;

    public void setUrl(String url) { this.url = url; }
    public void setUser(String user) { this.user = user; }
    public void setMaxConnections(int n) { this.maxConnections = n; }

    @Override
    public void initialize() throws SQLException {
        if (url == null) {
            throw new SQLException("org.quartz.dataSource.ds.url is not set: give the JDBC URL of the quartz database");
        }
        HikariConfig c = new HikariConfig();
        c.setJdbcUrl(url);
        c.setUsername(user);
        c.setMaximumPoolSize(maxConnections);
        c.setMinimumIdle(maxConnections);
        c.setAutoCommit(false);
        c.setPoolName("quartz-peer");
        pool = new HikariDataSource(c);
    }

    @Override
    public Connection getConnection() throws SQLException {
        return pool.getConnection();
    }

    @Override
    public void shutdown() {
        if (pool != null) {
            pool.close();
        }
    }
}
