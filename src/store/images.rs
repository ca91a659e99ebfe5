//! The `images` table: every image this agent pulled or loaded, written and read only by the
//! image preparation task (`runtime::images`) through [`ImageJournal`]. An image that is not
//! here was not put on the site by this agent and is never removed by it.

use rusqlite::params;

use super::Store;
use crate::runtime::ImageJournal;

impl ImageJournal for Store {
    fn record_image(&self, image: &str) -> Result<(), String> {
        self.write(format!("record image {image}"), |transaction| {
            transaction.execute(
                "INSERT INTO images (image, recorded_at)
                 VALUES (?1, CAST(strftime('%s', 'now') AS INTEGER))
                 ON CONFLICT (image) DO UPDATE SET recorded_at = excluded.recorded_at",
                params![image],
            )?;
            Ok(())
        })
        .map_err(|error| error.to_string())
    }

    fn forget_image(&self, image: &str) -> Result<(), String> {
        self.write(format!("forget image {image}"), |transaction| {
            transaction.execute("DELETE FROM images WHERE image = ?1", [image])?;
            Ok(())
        })
        .map_err(|error| error.to_string())
    }

    fn load_images(&self) -> Result<Vec<String>, String> {
        self.read("load images".to_owned(), |connection| {
            let mut statement = connection.prepare("SELECT image FROM images ORDER BY image")?;
            let rows = statement.query_map([], |row| row.get(0))?;
            rows.collect()
        })
        .map_err(|error| error.to_string())
    }
}
