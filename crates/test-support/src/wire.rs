//! A MongoDB wire-protocol proxy for tests: in front of the real server, it passes every
//! message through except what the test's rule rewrites, so a test can stage what
//! SecantusDB cannot (a cluster that refuses writes, an error code no server of ours
//! sends) while everything else (handshake, monitoring, the documents written) is the
//! real server's. Only OP_MSG commands are looked at; anything else passes as it is.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use mongodb::bson::{Bson, Document};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

const OP_MSG: i32 = 2013;

/// What the proxy does with one command.
pub enum Rewrite {
    /// Forward it and its reply untouched.
    Pass,
    /// Do not forward it: answer with this reply document.
    Answer(Document),
    /// Forward it, and hand the client `map(reply)` instead of the reply.
    Reply(Box<dyn FnOnce(Document) -> Document + Send>),
}

/// Decides, per command (its name and body, document sequences folded in as arrays),
/// what the proxy does. Runs for every OP_MSG the client sends.
pub type Rule = Arc<dyn Fn(&str, &Document) -> Rewrite + Send + Sync>;

/// A proxy on 127.0.0.1 in front of `upstream`, applying `rule` to every command; its
/// port. Runs until the test's runtime ends.
pub async fn mongo_proxy(upstream: std::net::SocketAddr, rule: Rule) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let port = listener.local_addr().expect("proxy address").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            tokio::spawn(connection(client, server, Arc::clone(&rule)));
        }
    });
    port
}

type Maps = Arc<Mutex<HashMap<i32, Box<dyn FnOnce(Document) -> Document + Send>>>>;

async fn connection(client: TcpStream, server: TcpStream, rule: Rule) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let maps: Maps = Arc::default();
    // One writer to the client: replies from the server and answers of the proxy.
    let (to_client, mut outbox) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(message) = outbox.recv().await {
            if client_tx.write_all(&message).await.is_err() {
                break;
            }
        }
    });
    let replies = {
        let (maps, to_client) = (Arc::clone(&maps), to_client.clone());
        tokio::spawn(async move {
            while let Some(message) = read_message(&mut server_rx).await {
                let map = maps.lock().expect("maps").remove(&response_to(&message));
                let message = match (map, body(&message)) {
                    (Some(map), Some(reply)) => {
                        op_msg(request_id(&message), response_to(&message), &map(reply))
                    }
                    _ => message,
                };
                if to_client.send(message).is_err() {
                    break;
                }
            }
        })
    };
    while let Some(message) = read_message(&mut client_rx).await {
        let rewrite = match command(&message) {
            Some((name, command)) => rule(&name, &command),
            None => Rewrite::Pass,
        };
        match rewrite {
            Rewrite::Pass => {}
            Rewrite::Answer(reply) => {
                let answer = op_msg(0, request_id(&message), &reply);
                if to_client.send(answer).is_err() {
                    break;
                }
                continue;
            }
            Rewrite::Reply(map) => {
                maps.lock().expect("maps").insert(request_id(&message), map);
            }
        }
        if server_tx.write_all(&message).await.is_err() {
            break;
        }
    }
    replies.abort();
}

async fn read_message(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.ok()?;
    let length = usize::try_from(i32::from_le_bytes(header)).ok()?;
    let mut message = vec![0u8; length.max(4)];
    message[..4].copy_from_slice(&header);
    stream.read_exact(&mut message[4..]).await.ok()?;
    Some(message)
}

fn int_at(message: &[u8], at: usize) -> i32 {
    message
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i32::from_le_bytes)
}

fn request_id(message: &[u8]) -> i32 {
    int_at(message, 4)
}

fn response_to(message: &[u8]) -> i32 {
    int_at(message, 8)
}

/// The kind-0 body of an OP_MSG.
fn body(message: &[u8]) -> Option<Document> {
    if int_at(message, 12) != OP_MSG || message.get(20) != Some(&0) {
        return None;
    }
    Document::from_reader(message.get(21..)?).ok()
}

/// The command an OP_MSG carries: its name, and its body with every document sequence
/// (kind-1 section, e.g. an `insert`'s `documents`) folded in as an array.
fn command(message: &[u8]) -> Option<(String, Document)> {
    if int_at(message, 12) != OP_MSG {
        return None;
    }
    let flags = u32::from_le_bytes(message.get(16..20)?.try_into().ok()?);
    let end = message.len() - if flags & 1 == 1 { 4 } else { 0 };
    let mut at = 20;
    let mut command: Option<Document> = None;
    let mut sequences: Vec<(String, Vec<Bson>)> = Vec::new();
    while at < end {
        let kind = message[at];
        at += 1;
        let size = usize::try_from(int_at(message, at)).ok()?;
        match kind {
            0 => command = Some(Document::from_reader(message.get(at..at + size)?).ok()?),
            1 => {
                let section = message.get(at + 4..at + size)?;
                let nul = section.iter().position(|&b| b == 0)?;
                let name = String::from_utf8_lossy(&section[..nul]).into_owned();
                let mut docs = Vec::new();
                let mut rest = &section[nul + 1..];
                while !rest.is_empty() {
                    let len = usize::try_from(int_at(rest, 0)).ok()?;
                    docs.push(Bson::Document(
                        Document::from_reader(rest.get(..len)?).ok()?,
                    ));
                    rest = &rest[len..];
                }
                sequences.push((name, docs));
            }
            _ => return None,
        }
        at += size;
    }
    let mut command = command?;
    let name = command.keys().next()?.clone();
    for (key, docs) in sequences {
        command.insert(key, docs);
    }
    Some((name, command))
}

/// An OP_MSG with one body section.
fn op_msg(request_id: i32, response_to: i32, body: &Document) -> Vec<u8> {
    let mut doc = Vec::new();
    body.to_writer(&mut doc).expect("a document serializes");
    let length = i32::try_from(16 + 4 + 1 + doc.len()).expect("a small message");
    let mut message = Vec::with_capacity(21 + doc.len());
    for field in [length, request_id, response_to, OP_MSG] {
        message.extend_from_slice(&field.to_le_bytes());
    }
    message.extend_from_slice(&0u32.to_le_bytes());
    message.push(0);
    message.extend_from_slice(&doc);
    message
}

/// The reply a server gives when it refuses a whole command.
pub fn command_error(code: i32, code_name: &str, message: &str) -> Document {
    mongodb::bson::doc! { "ok": 0.0, "errmsg": message, "code": code, "codeName": code_name }
}

/// Whether `name` is a command that writes documents.
pub fn is_write(name: &str) -> bool {
    matches!(
        name,
        "insert" | "update" | "delete" | "bulkWrite" | "findAndModify"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn an_op_msg_round_trips_through_the_parser() {
        let message = op_msg(7, 3, &doc! { "insert": "c", "documents": [{ "id": 1 }] });
        assert_eq!((request_id(&message), response_to(&message)), (7, 3));
        let (name, command) = command(&message).unwrap();
        assert_eq!(name, "insert");
        assert_eq!(command.get_array("documents").unwrap().len(), 1);
        assert_eq!(body(&message).unwrap().get_str("insert").unwrap(), "c");
    }
}
