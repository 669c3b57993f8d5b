//! rmcp's own client talking to spendguard's server over an in-memory duplex pipe, or to a
//! running daemon over streamable HTTP.

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use spendguard_mcp::{Identity, SpendguardServer};
use spendguard_service::Services;
use std::sync::Arc;

/// What a tool call returned.
#[derive(Debug, Clone)]
pub struct ToolReply {
    /// `isError`.
    pub is_error: bool,
    /// The first text block.
    pub text: String,
    /// `structuredContent`.
    pub data: Value,
}

/// A connected client acting as one agent.
pub struct McpAgent {
    client: RunningService<RoleClient, ()>,
}

impl McpAgent {
    /// Connects a client to a fresh server connection for `agent`, over `services`.
    pub async fn connect(services: &Services, agent: &str) -> McpAgent {
        let (server_io, client_io) = tokio::io::duplex(1 << 20);
        let server = SpendguardServer::new(
            Arc::clone(&services.spending),
            Arc::clone(&services.credentials),
            Identity::Agent(agent.to_string()),
        );
        tokio::spawn(async move {
            if let Ok(running) = server.serve(server_io).await {
                let _ = running.waiting().await;
            }
        });
        let client = ().serve(client_io).await.expect("MCP handshake");
        McpAgent { client }
    }

    /// Connects to a running daemon's `/mcp` over streamable HTTP with an agent's token.
    pub async fn connect_http(url: &str, token: &str) -> McpAgent {
        McpAgent::try_connect_http(url, token).await.expect("MCP handshake over HTTP")
    }

    /// [`McpAgent::connect_http`], with a failed handshake (a server gone) as an error.
    pub async fn try_connect_http(url: &str, token: &str) -> Result<McpAgent, String> {
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        use rmcp::transport::StreamableHttpClientTransport;
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url.to_string()).auth_header(token.to_string()),
        );
        let client = ().serve(transport).await.map_err(|e| e.to_string())?;
        Ok(McpAgent { client })
    }

    /// Calls a tool with JSON arguments.
    pub async fn call(&self, tool: &str, args: Value) -> ToolReply {
        self.try_call(tool, args).await.unwrap_or_else(|e| panic!("{tool}: {e}"))
    }

    /// [`McpAgent::call`], with a protocol or transport failure (a server gone) as an error.
    pub async fn try_call(&self, tool: &str, args: Value) -> Result<ToolReply, String> {
        let Value::Object(map) = args else { panic!("tool arguments must be an object") };
        // A call sent as the server goes away may never be answered: give up after a while.
        let call = self.client.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map));
        let r = tokio::time::timeout(std::time::Duration::from_secs(20), call)
            .await
            .map_err(|_| "no answer within 20 s".to_string())?
            .map_err(|e| format!("protocol error {e}"))?;
        let text = r.content.first().and_then(|c| c.as_text()).map(|t| t.text.clone()).unwrap_or_default();
        Ok(ToolReply { is_error: r.is_error.unwrap_or(false), text, data: r.structured_content.unwrap_or(Value::Null) })
    }

    /// The tools as listed to the model.
    pub async fn tools(&self) -> Value {
        let tools = self.client.list_all_tools().await.expect("tools/list");
        serde_json::to_value(tools).expect("tools JSON")
    }
}
