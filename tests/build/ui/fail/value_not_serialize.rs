use cache_runtime::cached;

pub struct User {
    pub id: u64,
}

#[cached]
async fn get_user(id: u64) -> Result<User, String> {
    Ok(User { id })
}

fn main() {}
